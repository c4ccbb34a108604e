"""The reversal desk (冲正): the operator's flow on the terminal's real devices.

:class:`ReversalDesk` is the imperative shell around the pure :mod:`terminal.reversal_flow`:
the :class:`terminal.devices.DeviceLoop` hands it keys and cards while a reversal runs; it
answers what the flow needs (is this an operator card, does the PIN match — checked offline
against the scrypt record the canteen's config carries, five wrong a day lock the card —,
which sales may be reversed, and the reversal itself) and shows each screen.

**Rules** (checked again by the server, :mod:`server.sales.reversals`): only this terminal's
own sales, within the canteen's window and on the same business day
(:func:`shared.reversal_rules.window_refusal`); offline within the day's offline reversal
limits (:func:`shared.reversal_rules.offline_refusal`) and not with a clock off by more than
it may be; a sale the server rejected cannot be reversed, one it holds for review can (that
resolves the hold). A digital RMB sale is refunded through the gateway — online only —
before its reversal is announced. The record itself is :mod:`terminal.reversals`'.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from hardware.display import Screen
from shared.clock import china_datetime
from shared.ecny_gateway import EcnyGateway
from shared.errors import DomainError, message
from shared.money import format_fen
from shared.pin_hash import verify_pin_record
from shared.protocol import Reversal
from shared.protocol.messages import QUARANTINE_REASONS
from shared.reversal_rules import offline_refusal, window_ms, window_refusal
from terminal import reversal_flow as rf
from terminal.reversals import (
    forget_unannounced,
    mark_announced,
    offline_today,
    record,
    reversible,
    unannounced,
)
from terminal.store import Store

log = logging.getLogger(__name__)

MAX_WRONG_PINS_A_DAY = 5  # wrong operator PINs at this terminal before the card is locked till tomorrow


@dataclass(frozen=True)
class Outcome:
    """What one reversal attempt came to: the record (done), or why not (a reason code)."""

    reversal: Reversal | None = None
    reason: str | None = None
    lines: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reversal is not None


class ReversalDesk:
    """Runs :mod:`terminal.reversal_flow` for one terminal (``terminal.agent.Terminal``).
    ``gateway``: the digital RMB gateway (refunds of e-CNY sales), if any."""

    def __init__(
        self,
        terminal: Any,
        gateway: EcnyGateway | None = None,
        idle_timeout_s: float = 60.0,
        monotonic: Any = time.monotonic,
    ) -> None:
        self.terminal = terminal
        self.gateway = gateway
        self.flow: rf.Flow = rf.IDLE
        self.idle_timeout_s = idle_timeout_s
        self._mono = monotonic
        self._last = self._mono()
        self._lock = threading.RLock()  # keys and cards come from two device threads

    @property
    def active(self) -> bool:
        with self._lock:
            if self.flow.active and self._mono() - self._last > self.idle_timeout_s:
                self._run(rf.timeout(self.flow))
            return self.flow.active

    # --- events from the devices ------------------------------------------------------------

    def on_key(self, k: str) -> None:
        with self._lock:
            if self.flow.active or k == rf.START_KEY:
                self._run(rf.key(self.flow, k) if self.active else rf.start(self.flow))

    def on_card(self, card_id: str) -> None:
        with self._lock:
            self._run(rf.card(self.flow, card_id))

    def _run(self, step: rf.Step) -> None:
        """Show the step, and answer what it needs until it needs nothing. Each new stage is
        told as a ``reversal_prompt`` event, a flow that ends without a reversal as
        ``reversal_declined`` (the events a simulated operator follows)."""
        before = self.flow.stage
        while True:
            self.flow = step.flow
            self._last = self._mono()
            if step.screen is not None:
                self.terminal.display.show(Screen(step.screen, step.tone))
            if step.need is None:
                listed_for_card = self.flow.stage == "choose" and self.flow.card is not None
                if self.flow.active and (self.flow.stage != before or step.reason or listed_for_card):
                    prompt = {"event": "reversal_prompt", "stage": self.flow.stage}
                    self.terminal.on_event({**prompt, "reason": step.reason} if step.reason else prompt)
                elif not self.flow.active and step.reason is not None and before != "idle":
                    self.terminal.on_event({"event": "reversal_declined", "reason": step.reason})
                return
            step = self._serve(step)

    def _serve(self, step: rf.Step) -> rf.Step:
        flow = step.flow
        if step.need == "operator":
            assert flow.operator is not None
            return rf.operator_checked(flow, self.operator_name(flow.operator))
        if step.need == "pin":
            assert flow.operator is not None
            ok = self.pin_ok(flow.operator, flow.pin)
            if not ok and self.pin_locked(flow.operator):
                return rf.locked(flow)
            return rf.pin_checked(flow, ok)
        if step.need == "sales":
            found = self.candidates(flow.card)
            return rf.listed(flow, found, "reversal_no_sale" if found else self.why_none(flow.card))
        assert step.need == "reverse" and flow.chosen is not None and flow.operator is not None
        outcome = self.reverse(flow.chosen.sale_seq, flow.operator)
        # shown and told already (reversed / reversal_declined)
        return replace(rf.reversed_(flow, outcome.lines, None), screen=None)

    # --- what the flow needs ----------------------------------------------------------------

    def operator_name(self, card_id: str) -> str | None:
        op = self.terminal.rules()[0].operators.get(card_id)
        return None if op is None else op.name

    def pin_ok(self, card_id: str, pin: str) -> bool:
        """The operator's PIN, checked here offline against its hash record. After
        :data:`MAX_WRONG_PINS_A_DAY` wrong ones in a day the card is refused until the next
        day, whatever is typed (a stolen operator card cannot be tried through the PINs)."""
        store, now = self.terminal.store, self.terminal.clock.now_ms()
        key, day = f"operator_pin_wrong:{card_id}", china_datetime(now).date().isoformat()
        seen_day, _, wrong = (store.get_meta(key) or "").partition("=")
        wrong_today = int(wrong) if seen_day == day and wrong.isdigit() else 0
        op = self.terminal.rules()[0].operators.get(card_id)
        if wrong_today >= MAX_WRONG_PINS_A_DAY:
            log.warning("%s: operator card %s is locked for today", self.terminal.config.terminal_id, card_id)
            return False
        ok = op is not None and verify_pin_record(op.pin_hash, pin)
        if not ok:
            log.warning("%s: wrong operator PIN for card %s", self.terminal.config.terminal_id, card_id)
            store.set_metas({key: f"{day}={wrong_today + 1}"})
        return ok

    def pin_locked(self, card_id: str) -> bool:
        seen_day, _, wrong = (self.terminal.store.get_meta(f"operator_pin_wrong:{card_id}") or "").partition(
            "="
        )
        today = china_datetime(self.terminal.clock.now_ms()).date().isoformat()
        return seen_day == today and wrong.isdigit() and int(wrong) >= MAX_WRONG_PINS_A_DAY

    def window_ms(self) -> int:
        return window_ms(self.terminal.store.canteen_config(self.terminal.config.canteen_id))

    def candidates(self, card_id: str | None = None) -> tuple[rf.Candidate, ...]:
        now = self.terminal.sale_time()
        return reversible(self.terminal.store, now, self.window_ms(), rf.SHOWN, card_id)

    def why_none(self, card_id: str | None) -> str:
        """Why nothing can be reversed (for ``card_id``'s sales, or any): what the newest
        such sale of this terminal runs into, e.g. the window."""
        sql = "SELECT j.seq FROM journal j WHERE j.announced = 1"
        args: list[Any] = []
        if card_id is not None:
            sql += " AND j.card_id = ?"
            args.append(card_id)
        row = self.terminal.store.conn.execute(sql + " ORDER BY j.seq DESC LIMIT 1", args).fetchone()
        if row is None:
            return "reversal_no_sale"
        sale = self._sale(row[0])
        return self._refusal(sale, self.terminal.sale_time(), True) or "reversal_no_sale"

    def _sale(self, sale_seq: int) -> Any:
        return self.terminal.store.conn.execute(
            "SELECT j.*, r.seq AS reversed_by FROM journal j LEFT JOIN reversals r ON r.sale_seq = j.seq "
            "WHERE j.seq = ?",
            (sale_seq,),
        ).fetchone()

    # --- the reversal -----------------------------------------------------------------------

    def reverse(self, sale_seq: int, operator_card: str) -> Outcome:
        """Reverse this terminal's sale ``sale_seq``: checked, journaled, (digital RMB)
        refunded through the gateway, then announced and shown. The caller has checked the
        operator and the PIN."""
        t = self.terminal
        store: Store = t.store
        with t._journal_lock:
            now = t.sale_time()
            sale = self._sale(sale_seq)
            link = t.link_state(now)
            reason = self._refusal(sale, now, link.online, link.clock_offset_ms)
            if reason is not None:
                return self._declined(reason, sale_seq)
            refund_no = None
            if sale["method"] == "ecny":
                refund_no = f"{_order_no(sale)}-rev"
            r = record(
                store,
                terminal_id=t.config.terminal_id,
                canteen_id=t.config.canteen_id,
                sale=dict(sale),
                operator_card=operator_card,
                occurred_at_ms=now,
                offline=not link.online,
                refund_no=refund_no,
            )
        if refund_no is not None and not self._refund(r, _order_no(sale)):
            forget_unannounced(store, r.seq)
            return self._declined("ecny_unavailable", sale_seq)
        with t._journal_lock:
            lines = self._announce(r, sale["card_id"], not link.online)
        t.sync.poke()
        return Outcome(r, None, lines)

    def _refusal(self, sale: Any, now: int, online: bool, clock_offset_ms: int | None = None) -> str | None:
        if sale is None or sale["announced"] != 1:
            return "reversal_no_sale"
        if sale["reversed_by"] is not None:
            return "sale_already_reversed"
        if sale["status"] == "rejected" and sale["reason"] not in QUARANTINE_REASONS:
            return "reversal_sale_not_applied"
        reason = window_refusal(sale["occurred_at_ms"], now, self.window_ms())
        if reason is not None:
            return reason
        if sale["method"] == "ecny":
            return None if online and self.gateway is not None else "ecny_offline"
        if not online:
            limits = self.terminal.rules()[1]
            if clock_offset_ms is not None and abs(clock_offset_ms) > limits.max_clock_offset_ms:
                return "clock_skew"  # as for sales: misdated offline, it would be refused anyway
            count, fen = offline_today(self.terminal.store, now)
            return offline_refusal(count, fen, sale["amount_fen"], limits)
        return None

    def _refund(self, r: Reversal, order_no: str) -> bool:
        assert self.gateway is not None and r.refund_no is not None
        try:
            self.gateway.refund(order_no, r.refund_no, r.amount_fen)  # idempotent per refund number
        except DomainError as exc:
            log.error("%s: refund of %s failed: %s", self.terminal.config.terminal_id, order_no, exc.code)
            return False
        return True

    def _announce(self, r: Reversal, card_id: str | None, offline: bool) -> tuple[str, ...]:
        """Journaled (and refunded): now tell the operator and the diner, then release it."""
        how = "数字人民币原路退回" if r.method == "ecny" else "原路退回：补贴退补贴，自费退自费"
        lines = ("冲正成功", f"退回 {format_fen(r.amount_fen)}", how, f"原交易 {r.sale_id}")
        if offline:
            lines += ("【离线冲正，联网后入账】",)
        self.terminal.display.show(Screen(lines, "ok"))
        self.terminal.on_event(_event("reversed", r, card_id))
        mark_announced(self.terminal.store, r.seq)
        log.info("%s: reversal %s of sale %s", self.terminal.config.terminal_id, r.reversal_id, r.sale_id)
        return lines

    def _declined(self, reason: str, sale_seq: int) -> Outcome:
        lines = (message(reason), "未冲正")
        self.terminal.display.show(Screen(lines, "error"))
        self.terminal.on_event({"event": "reversal_declined", "sale_seq": sale_seq, "reason": reason})
        return Outcome(None, reason, lines)

    # --- one line instead of the keypad (stdin / fifo terminals) ----------------------------

    def by_line(self, line: rf.ReversalLine) -> Outcome:
        """The whole flow from one ``reverse …`` line: operator, PIN, sale, confirm."""
        if self.operator_name(line.operator_card) is None:
            return self._declined("operator_unknown", line.sale_seq or 0)
        if not self.pin_ok(line.operator_card, line.pin):
            locked = self.pin_locked(line.operator_card)
            return self._declined(
                "operator_pin_locked" if locked else "operator_pin_wrong", line.sale_seq or 0
            )
        seq = line.sale_seq
        if seq is None:
            found = self.candidates(line.card)
            if not found:
                return self._declined(self.why_none(line.card), 0)
            seq = found[0].sale_seq
        return self.reverse(seq, line.operator_card)

    def recover(self) -> int:
        """Announce reversals journaled before a crash but never announced (a digital RMB one
        after its refund, which is idempotent, went through)."""
        done = 0
        for r in unannounced(self.terminal.store):
            if r.refund_no is not None:
                sale = self.terminal.store.conn.execute(
                    "SELECT * FROM journal WHERE seq = ?", (r.sale_seq,)
                ).fetchone()
                if self.gateway is None or not self._refund(r, _order_no(sale)):
                    continue  # tried again at the next start
            when = china_datetime(r.occurred_at_ms).strftime("%H:%M:%S")
            with self.terminal._journal_lock:
                self._announce(r, None, r.offline)
                self.terminal.display.show(
                    Screen(("断电前最后一笔冲正已成功", f"{when} 退回 {format_fen(r.amount_fen)}"), "ok")
                )
            done += 1
        return done


def _order_no(sale: Any) -> str:
    """The digital RMB order of a journaled e-CNY sale (its credential ``ecny:<order>``)."""
    credential = json.loads(sale["sale_json"]).get("credential") or ""
    return credential.removeprefix("ecny:")


def _event(kind: str, r: Reversal, card_id: str | None) -> dict[str, Any]:
    return {
        "event": kind,
        "seq": r.seq,
        "uuid": r.uuid,
        "sale_seq": r.sale_seq,
        "sale_uuid": r.sale_uuid,
        "card_id": card_id,
        "amount_fen": r.amount_fen,
        "offline": r.offline,
    }
