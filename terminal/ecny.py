"""Digital RMB (数字人民币) at the terminal: online only, settled outside the card purses.

:class:`EcnyCashier` takes a meal or a basket and charges it through the configured gateway
(:mod:`shared.ecny_gateway`), either by scanning the diner's wallet payment code
(:meth:`~EcnyCashier.pay_with_code`) or by showing a merchant QR code and waiting for the
diner's wallet to pay it (:meth:`~EcnyCashier.start_qr` / :meth:`~EcnyCashier.await_qr`).

* **Offline, no digital RMB.** Without a server link the cashier does not even try: the
  display says so in Chinese and offers the other methods (``ecny_offline``).
* **Price.** A meal costs the period's visitor price when the canteen has one (the payer is
  not identified as staff of the unit), else its price; a basket costs its items.
* **Durability.** The order is written to ``ecny_orders`` before the gateway charges; when
  the gateway reports it paid, the sale goes through :meth:`terminal.agent.Terminal.tap` with
  ``method="ecny"`` and ``credential="ecny:<order>"`` (journaled, then "支付成功"). The sale
  carries no card and moves no purse; the server records it for the canteen's totals under
  its own method. :meth:`~EcnyCashier.recover` settles what a crash left behind: an order
  paid but never journaled is refunded (the diner was never told "paid").
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hardware.display import Screen
from shared.ecny_gateway import EcnyGateway, GatewayOrder
from shared.errors import DomainError, message
from shared.money import format_fen
from shared.protocol import Item, Sale
from terminal.authorize import Decision, TapRequest
from terminal.basket import price_items, typed_amount_problem
from terminal.rules import CanteenRules
from terminal.store import Store

log = logging.getLogger(__name__)

OFFLINE_SCREEN = ("数字人民币需联网使用", "当前网络离线", "请改用刷卡、扫码或刷脸支付")


@dataclass(frozen=True)
class Priced:
    amount_fen: int
    meal_period: str | None
    items: tuple[Item, ...] = ()


def price(
    rules: CanteenRules, now_ms: int, kind: str, items: tuple[tuple[str, int], ...], amount_fen: int | None
) -> Priced | str:
    """What a digital RMB payer is charged (pure), or a decline reason."""
    if kind == "meal":
        period = rules.period_at(now_ms)
        if period is None:
            return "outside_meal_hours"
        amount = period.visitor_price_fen if period.visitor_price_fen is not None else period.price_fen
        return Priced(amount, period.name)
    if items:  # at the list prices, as a card would pay (terminal.basket)
        out = price_items(rules, items)
        if isinstance(out, str):
            return out
        return Priced(sum(i.qty * i.unit_price_fen for i in out), None, out)
    if amount_fen is None:
        return "basket_empty"
    problem = typed_amount_problem(rules, amount_fen)
    return Priced(amount_fen, None) if problem is None else problem


def paid_order_decision(
    conn: sqlite3.Connection, credential: str | None
) -> tuple[Decision | None, str | None]:
    """The journal hook (see terminal.identify): a paid, not yet journaled order → approved."""
    order_no = (credential or "").removeprefix("ecny:")
    row = conn.execute(
        "SELECT amount_fen, meal_period, items_json, status FROM ecny_orders WHERE order_no = ?", (order_no,)
    ).fetchone()
    if row is None or row[3] != "paid":
        return None, "ecny_declined"
    items = tuple(Item(**i) for i in json.loads(row[2]))
    return Decision(True, amount_fen=row[0], meal_period=row[1], items=items), None


class EcnyCashier:
    def __init__(
        self,
        terminal: Any,  # terminal.agent.Terminal (not imported: the agent imports us indirectly)
        gateway: EcnyGateway,
        *,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 1.0,
    ) -> None:
        self.terminal = terminal
        self.gateway = gateway
        self._sleep = sleep
        self._poll_s = poll_s
        # its own connection (as terminal.store asks of every thread): the cashier runs on the
        # scanner's thread, and a write on the terminal's connection could land inside a tap's
        # transaction on another thread, or commit without an fsync during a relaxed one
        self._store = Store(terminal.store.path)
        self.conn: sqlite3.Connection = self._store.conn

    def close(self) -> None:
        self._store.close()

    # --- the two ways to pay -------------------------------------------------------------

    def pay_with_code(
        self,
        customer_code: str,
        *,
        kind: str = "meal",
        items: tuple[tuple[str, int], ...] = (),
        amount_fen: int | None = None,
    ) -> tuple[Decision, Sale | None]:
        """The diner shows their wallet's payment code; the terminal scanned it."""
        started = self._start(kind, items, amount_fen)
        if isinstance(started, Decision):
            return started, None
        order_no, _ = started
        try:
            order = self.gateway.pay_customer_code(order_no, customer_code)
        except DomainError as exc:
            return self._failed(order_no, exc)
        return self._settle(order, kind, items)

    def start_qr(
        self, *, kind: str = "meal", items: tuple[tuple[str, int], ...] = (), amount_fen: int | None = None
    ) -> tuple[str, str] | Decision:
        """Show a merchant QR code for the diner's wallet app; returns (order, QR text)."""
        started = self._start(kind, items, amount_fen)
        if isinstance(started, Decision):
            return started
        order_no, priced = started
        try:
            qr = self.gateway.merchant_qr(order_no)
        except DomainError as exc:
            return self._failed(order_no, exc)[0]
        self.terminal.display.show(
            Screen(("请用数字人民币App扫码支付", f"金额 {format_fen(priced.amount_fen)}", qr), "info")
        )
        return order_no, qr

    def await_qr(self, order_no: str, timeout_s: float = 120.0) -> tuple[Decision, Sale | None]:
        """Poll the gateway until the order is paid, fails, or times out (then it is closed)."""
        deadline = time.monotonic() + timeout_s
        kind, items = self._order_kind(order_no)
        while True:
            try:
                order = self.gateway.query(order_no)
            except DomainError as exc:
                if exc.code != "ecny_unavailable":
                    return self._failed(order_no, exc)
                order = None
            if order is not None and order.status == "paid":
                return self._settle(order, kind, items)
            if order is not None and order.status in ("failed", "closed"):
                return self._failed(order_no, DomainError("ecny_declined", order.fail_reason or order.status))
            if time.monotonic() >= deadline:
                try:
                    order = self.gateway.close_order(order_no)
                except DomainError as exc:
                    return self._failed(order_no, exc)
                if order.status == "paid":  # paid in the last moment
                    return self._settle(order, kind, items)
                return self._failed(
                    order_no, DomainError("ecny_declined", "timed out waiting for the wallet")
                )
            self._sleep(self._poll_s)

    # --- steps -----------------------------------------------------------------------------

    def _declined(self, reason: str, lines: tuple[str, ...] | None = None) -> Decision:
        # through the terminal: it holds the journal lock while it records the decline
        return self.terminal.decline("ecny", reason, lines=lines or (message(reason, "zh"),))

    def _start(
        self, kind: str, items: tuple[tuple[str, int], ...], amount_fen: int | None
    ) -> tuple[str, Priced] | Decision:
        if not self.terminal.sync.online:
            return self._declined("ecny_offline", OFFLINE_SCREEN)
        now = self.terminal.clock.now_ms()
        config = self.terminal.store.canteen_config(self.terminal.config.canteen_id) or {}
        priced = price(
            CanteenRules.from_config(self.terminal.config.canteen_id, config), now, kind, items, amount_fen
        )
        if isinstance(priced, str):
            return self._declined(priced)
        order_no = f"{self.terminal.config.terminal_id}-{now}-{secrets.token_hex(3)}"
        self.conn.execute(
            "INSERT INTO ecny_orders(order_no, amount_fen, kind, meal_period, items_json, status, "
            "created_at_ms) VALUES (?, ?, ?, ?, ?, 'created', ?)",
            (
                order_no,
                priced.amount_fen,
                kind,
                priced.meal_period,
                json.dumps([i.__dict__ for i in priced.items]),
                now,
            ),
        )
        try:
            self.gateway.create_order(order_no, priced.amount_fen, "食堂消费")
        except DomainError as exc:
            return self._failed(order_no, exc)[0]
        return order_no, priced

    def _order_kind(self, order_no: str) -> tuple[str, tuple[tuple[str, int], ...]]:
        row = self.conn.execute(
            "SELECT kind, items_json FROM ecny_orders WHERE order_no = ?", (order_no,)
        ).fetchone()
        return row[0], tuple((i["sku"], i["qty"]) for i in json.loads(row[1]))

    def _failed(self, order_no: str, exc: DomainError) -> tuple[Decision, None]:
        # unreachable: the order's fate is unknown; it stays 'created' for recover() to settle
        if exc.code != "ecny_unavailable":
            self.conn.execute(
                "UPDATE ecny_orders SET status = 'failed', reason = ? "
                "WHERE order_no = ? AND status = 'created'",
                (exc.code, order_no),
            )
        code = exc.code if exc.code.startswith("ecny_") else "ecny_declined"
        log.warning("ecny order %s: %s (%s)", order_no, exc.code, exc.detail)
        return self._declined(code), None

    def _settle(
        self, order: GatewayOrder, kind: str, items: tuple[tuple[str, int], ...]
    ) -> tuple[Decision, Sale | None]:
        self.conn.execute(
            "UPDATE ecny_orders SET status = 'paid', paid_at_ms = ?, trade_no = ? "
            "WHERE order_no = ? AND status = 'created'",
            (order.paid_at_ms, order.trade_no, order.order_no),
        )
        decision, sale = self.terminal.tap(
            TapRequest(None, method="ecny", kind=kind, items=items, credential=f"ecny:{order.order_no}")
        )
        if sale is not None:
            self.conn.execute(
                "UPDATE ecny_orders SET status = 'journaled', seq = ? WHERE order_no = ?",
                (sale.seq, order.order_no),
            )
        else:
            self._reverse(order.order_no, decision.reason or "not journaled")
        return decision, sale

    def _reverse(self, order_no: str, why: str) -> bool:
        """Refund an order the diner was never told was paid. False if the gateway is away."""
        amount = self.conn.execute(
            "SELECT amount_fen FROM ecny_orders WHERE order_no = ?", (order_no,)
        ).fetchone()[0]
        try:
            self.gateway.refund(order_no, f"{order_no}-R", amount)
        except DomainError as exc:
            log.error("ecny order %s: reversal failed (%s), will retry", order_no, exc.code)
            return False
        self.conn.execute(
            "UPDATE ecny_orders SET status = 'reversed', reason = ? WHERE order_no = ?", (why, order_no)
        )
        log.warning("ecny order %s reversed: %s", order_no, why)
        return True

    def recover(self) -> dict[str, int]:
        """Settle orders a crash or a lost gateway left open (run at start, and now and then)."""
        counts = {"journaled": 0, "reversed": 0, "failed": 0, "open": 0}
        for order_no, status in self.conn.execute(
            "SELECT order_no, status FROM ecny_orders WHERE status IN ('created', 'paid')"
        ).fetchall():
            if self._journaled(order_no):
                self.conn.execute(
                    "UPDATE ecny_orders SET status = 'journaled' WHERE order_no = ?", (order_no,)
                )
                counts["journaled"] += 1
                continue
            try:
                order = self.gateway.query(order_no) if status == "created" else None
                if order is not None and order.status == "created":
                    order = self.gateway.close_order(order_no)
            except DomainError as exc:
                if exc.code == "not_found":  # the gateway never saw it
                    self.conn.execute(
                        "UPDATE ecny_orders SET status = 'failed', reason = 'not_found' WHERE order_no = ?",
                        (order_no,),
                    )
                    counts["failed"] += 1
                else:
                    counts["open"] += 1
                continue
            if order is None or order.status == "paid":
                counts["reversed" if self._reverse(order_no, "paid but never journaled") else "open"] += 1
            else:
                self.conn.execute(
                    "UPDATE ecny_orders SET status = 'failed', reason = ? WHERE order_no = ?",
                    (order.status, order_no),
                )
                counts["failed"] += 1
        return counts

    def _journaled(self, order_no: str) -> bool:
        needle = json.dumps(f"ecny:{order_no}")
        return (
            self.conn.execute(
                "SELECT 1 FROM journal WHERE method = 'ecny' AND instr(sale_json, ?) > 0", (needle,)
            ).fetchone()
            is not None
        )
