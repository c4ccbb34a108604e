"""The cashier at a shop counter (超市收银): barcodes and keys in, the basket on the display.

In **shop mode** (the terminal config's ``mode``, or switched by an operator card,
:mod:`terminal.operator_menu`; the choice is kept across restarts) a card laid on the
reader, a payment code shown to the scanner, a face (key ``A``) or a digital RMB code pays
for the cashier's basket instead of a meal. The cashier builds the basket with the serial
scanner that also reads payment codes (:mod:`terminal.scanned` tells a product barcode from
a payment code) and the keypad:

=========  ================================================================================
key        does
=========  ================================================================================
``0``–``9``  type a number (shown as it is typed)
``#``      with a number: the item of that code (item code, or a barcode typed by hand);
           without one: 结算 — the total and "please pay"
``B``      数量: the number typed is the quantity of the last line
``C``      撤销: void the last line
``D``      金额: the number typed is a free amount in fen (``1250`` = ¥12.50), where the
           canteen allows one, up to its cap; never together with items
``*``      clear what was typed; with nothing typed, ``*`` twice clears the basket
``A``      刷脸: pay by face (with a camera; :mod:`terminal.devices`)
=========  ================================================================================

Every change shows the line, the number of pieces, the running total and the item's
Chinese name; a refusal (an item not in the cached price list, priced above its reference,
a stale price list …, see :mod:`terminal.basket`) shows its Chinese reason and leaves the
basket as it was. Each change is also an event for listeners (``basket``, ``basket_refused``).

When a payment ends (the device loop calls :meth:`ShopFlow.after_event`), the basket is
emptied if the sale for it was journaled (the diner saw 支付成功), and kept otherwise (a
declined card: another diner's card, or QR, may still pay). While one payment for the basket
runs, another device's payment gets an empty basket and is declined: a basket is paid once.

In meal mode a scanned barcode only shows the item and its price.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from hardware.display import Screen
from shared.errors import DomainError, message
from shared.money import format_fen
from terminal import basket as basket_rules
from terminal.basket import Basket
from terminal.config import MODES
from terminal.readers import Order
from terminal.store import Store

log = logging.getLogger(__name__)

KEY_ENTER, KEY_CANCEL, KEY_QTY, KEY_VOID, KEY_AMOUNT = "#", "*", "B", "C", "D"
MAX_ENTRY = 13  # the longest code a cashier types: an EAN-13 barcode
MODE_META = "cashier_mode"
MODE_ZH = {"meal": "就餐", "shop": "超市收银"}
PAY_PROMPT = "请刷卡、扫码或刷脸支付"
IDLE_HINT = "扫码或输入商品号 #结算"


def summary(basket: Basket) -> str:
    if basket.typed_amount_fen is not None:
        return f"手输金额 合计 {format_fen(basket.total_fen)}"
    return f"共{basket.pieces}件 合计 {format_fen(basket.total_fen)}"


def basket_screen(basket: Basket, head: str, entry: str = "", tone: str = "info") -> Screen:
    """What the display shows after a change: the change, the total, what is being typed."""
    hint = f"输入 {entry}" if entry else IDLE_HINT
    return Screen((head, summary(basket), hint), tone)


def line_text(line: basket_rules.Line) -> str:
    return f"{line.name} ×{line.qty} {format_fen(line.amount_fen)}"


class ShopFlow:
    def __init__(self, terminal: Any, mode: str = "meal") -> None:  # terminal.agent.Terminal
        self.terminal = terminal
        self._lock = threading.RLock()
        self.basket = Basket()
        self.entry = ""
        self._clear_armed = False  # '*' pressed once on an empty entry: the next one clears
        self._charging: tuple[int, Basket] | None = None  # (last seq before, basket) while paying
        kept = terminal.store.get_meta(MODE_META)
        self._mode = kept if kept in MODES else mode

    # --- the mode ------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def active(self) -> bool:
        return self._mode == "shop"

    def set_mode(self, mode: str) -> None:
        """Switch between meals and the shop (kept across restarts); the basket starts empty."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
        with self._lock:
            self._mode = mode
            self.basket, self.entry, self._clear_armed = Basket(), "", False
            # on a connection of its own: the terminal's is written under its journal lock
            store = Store(self.terminal.config.db_path)
            try:
                store.set_metas({MODE_META: mode})
            finally:
                store.close()
        log.info("%s: cashier mode %s", self.terminal.config.terminal_id, mode)
        prompt = "请扫描商品条码" if mode == "shop" else "请刷卡"
        self.terminal.display.show(Screen((f"已切换为{MODE_ZH[mode]}模式", prompt), "info"))
        self.terminal.on_event({"event": "mode", "mode": mode})

    # --- paying --------------------------------------------------------------------------

    def order(self) -> Order:
        """What a card, code or face pays for now: a meal in meal mode; the basket in shop
        mode (an empty one, declined as such, while another payment for it runs)."""
        if not self.active:
            return Order()
        with self._lock:
            b = self.basket
            if self._charging is not None or b.empty:
                return Order("shop")
            self._charging = (self._last_seq(), b)
            if b.typed_amount_fen is not None:
                return Order("shop", amount_fen=b.typed_amount_fen)
            return Order("shop", b.items())

    def after_event(self) -> None:
        """A device event was handled: if it paid for the basket, the basket is done."""
        with self._lock:
            if self._charging is None:
                return
            seq, charged = self._charging
            self._charging = None
            if not self._paid_since(seq, charged):
                return
            if self.basket == charged:
                self.basket, self.entry, self._clear_armed = Basket(), "", False
        self.terminal.on_event({"event": "basket", "action": "paid", "total_fen": charged.total_fen})

    def _last_seq(self) -> int:
        row = self.terminal.store.conn.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()
        return int(row[0])

    def _paid_since(self, seq: int, charged: Basket) -> bool:
        rows = self.terminal.store.conn.execute(
            "SELECT sale_json FROM journal WHERE seq > ? AND kind = 'shop'", (seq,)
        ).fetchall()
        for (raw,) in rows:
            sale = json.loads(raw)
            items = tuple((i["sku"], i["qty"]) for i in sale.get("items") or ())
            if charged.typed_amount_fen is not None:
                if not items and sale["amount_fen"] == charged.typed_amount_fen:
                    return True
            elif items == charged.items():
                return True
        return False

    # --- the scanner and the keypad --------------------------------------------------------

    def scan(self, code: str) -> None:
        """A product barcode from the scanner (normalized by :mod:`terminal.scanned`)."""
        with self._lock:
            self._add(code)

    def key(self, key: str) -> None:
        """One key the cashier pressed (see the module's table)."""
        with self._lock:
            if key.isdigit():
                self._clear_armed = False
                if len(self.entry) < MAX_ENTRY:
                    self.entry += key
                self._show(self._head(), tone="info")
            elif key == KEY_ENTER:
                self._enter()
            elif key == KEY_QTY:
                self._quantity()
            elif key == KEY_VOID:
                self._void()
            elif key == KEY_AMOUNT:
                self._amount()
            elif key == KEY_CANCEL:
                self._cancel()

    def _enter(self) -> None:
        if self.entry:
            code, self.entry = self.entry, ""
            self._add(code)
            return
        try:
            basket_rules.payable(self.basket)
        except DomainError as exc:
            self._refused(exc)
            return
        self.terminal.display.show(Screen((summary(self.basket), PAY_PROMPT), "info"))
        self._event("checkout")

    def _quantity(self) -> None:
        if not self.entry:
            self._show("请先输入数量，再按B", tone="error")
            return
        qty, self.entry = int(self.entry), ""
        self._change(lambda b: basket_rules.set_quantity(b, qty), "quantity")

    def _void(self) -> None:
        self.entry = ""
        try:
            self.basket, line = basket_rules.void_last(self.basket)
        except DomainError as exc:
            self._refused(exc)
            return
        self._show("已撤销 " + (line_text(line) if line is not None else "手输金额"))
        self._event("void", sku=line.sku if line is not None else None)

    def _amount(self) -> None:
        if not self.entry:
            self._show("请先输入金额（分），再按D", tone="error")
            return
        fen, self.entry = int(self.entry), ""
        rules = self.terminal.rules()[0]
        self._change(lambda b: basket_rules.type_amount(b, rules, fen), "amount")

    def _cancel(self) -> None:
        if self.entry:
            self.entry = ""
            self._show(self._head())
        elif self.basket.empty:
            self._refused(DomainError("basket_empty", "nothing to clear"))
        elif self._clear_armed:
            self.basket, self._clear_armed = Basket(), False
            self.terminal.display.show(Screen(("购物篮已清空", "请扫描商品"), "info"))
            self._event("clear")
        else:
            self._clear_armed = True
            self._show("再按 * 清空购物篮", tone="error")
            self._event("clear_armed")

    def _add(self, code: str) -> None:
        self._clear_armed = False
        rules, limits = self.terminal.rules()
        now = self.terminal.sale_time()
        sync = self.terminal.sync  # the cache is current now while in sync (as link_state says)
        last_sync = now if sync.in_sync else sync.last_sync_ms
        self._change(lambda b: basket_rules.add(b, rules, limits, last_sync, now, code), "add", code=code)

    def _change(self, step: Any, action: str, code: str | None = None) -> None:
        try:
            self.basket = step(self.basket)
        except DomainError as exc:
            self._refused(exc, code)
            return
        self._show(self._head())
        last = self.basket.last
        self._event(action, sku=last.sku if last is not None and action != "amount" else None)

    def _head(self) -> str:
        if self.basket.typed_amount_fen is not None:
            return f"手输金额 {format_fen(self.basket.typed_amount_fen)}"
        last = self.basket.last
        return line_text(last) if last is not None else "请扫描商品"

    def _show(self, head: str, tone: str = "info") -> None:
        self.terminal.display.show(basket_screen(self.basket, head, self.entry, tone))

    def _refused(self, exc: DomainError, code: str | None = None) -> None:
        log.info("basket: %s (%s)", exc.code, exc.detail)
        lines = (message(exc.code), code or "", summary(self.basket))
        self.terminal.display.show(Screen(tuple(x for x in lines if x), "error"))
        self.terminal.on_event({"event": "basket_refused", "reason": exc.code, "code": code})

    def _event(self, action: str, **extra: Any) -> None:
        self.terminal.on_event(
            {
                "event": "basket",
                "action": action,
                "lines": len(self.basket.lines),
                "pieces": self.basket.pieces,
                "total_fen": self.basket.total_fen,
                **{k: v for k, v in extra.items() if v is not None},
            }
        )
