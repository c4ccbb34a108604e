"""Reversals (冲正) at the terminal: the journal and outbox of reversals, and the desk that
runs the operator's flow on the real devices.

**Records.** A reversal is a record of its own (``reversals``), never an edit of the sale:
its own ``seq`` (per terminal, from 1) and uuid, the sale's ``seq`` and uuid, the operator
card, the time, the amount (the sale's). It is journaled with its outbox row in one durable
transaction *before* the display says 冲正成功, announced afterwards like a sale (an
unannounced one is announced at the next start, :meth:`ReversalDesk.recover`), and sent from
its own outbox (``terminal.sync``). A sale is reversed at most once (``sale_seq`` is unique).

**Rules** (checked again by the server, :mod:`server.sales.reversals`): only this terminal's
own sales, within the canteen's window and on the same business day
(:func:`shared.reversal_rules.window_refusal`); offline within the day's offline reversal
limits (:func:`shared.reversal_rules.offline_refusal`); a sale the server rejected cannot be
reversed, one it holds for review can (that resolves the hold). A digital RMB sale is
refunded through the gateway — online only — before its reversal is announced.

**Balances.** A reversed sale no longer counts as this terminal's unconfirmed spending; the
money given back shows in the card's balance when the server's balance (ack or delta) says
so — never earlier, so an offline terminal never lets a card spend money twice.

:class:`ReversalDesk` is the imperative shell around :mod:`terminal.reversal_flow`: it feeds
the flow keys and cards from the :class:`terminal.devices.DeviceLoop`, answers what the flow
needs (operator, PIN, sales, the reversal itself) and shows each screen.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from hardware.display import Screen
from shared.clock import china_datetime, start_of_china_day_ms
from shared.ecny_gateway import EcnyGateway
from shared.errors import DomainError, message
from shared.ids import uuid7_hex
from shared.money import format_fen
from shared.pin_hash import verify_pin_record
from shared.protocol import Reversal, ReversalResult
from shared.protocol.messages import QUARANTINE_REASONS
from shared.reversal_rules import offline_refusal, window_ms, window_refusal
from shared.sqlite_txn import write_txn
from terminal import reversal_flow as rf
from terminal.store import Store

log = logging.getLogger(__name__)

_MAX_SEQ = 2**62
MAX_WRONG_PINS_A_DAY = 5  # wrong operator PINs at this terminal before the card is locked till tomorrow
# a sale that is still reversible: announced, not reversed, not refused by the server (one it
# holds for review may be reversed: that resolves the hold)
_REVERSIBLE = (
    "j.announced = 1 AND r.seq IS NULL "
    f"AND (j.status <> 'rejected' OR j.reason IN ({', '.join(repr(q) for q in sorted(QUARANTINE_REASONS))}))"
)
REVERSED_SEQS = "SELECT sale_seq FROM reversals WHERE status <> 'rejected'"  # for store queries


# --- the records ---------------------------------------------------------------------------


def reversible(
    store: Store, now_ms: int, window_ms_: int, limit: int = rf.SHOWN, card_id: str | None = None
) -> tuple[rf.Candidate, ...]:
    """This terminal's sales that may be reversed at ``now_ms``, newest first."""
    since = max(now_ms - window_ms_, start_of_china_day_ms(now_ms))
    sql = (
        "SELECT j.seq, j.amount_fen, j.occurred_at_ms, j.card_id, j.method, j.kind, j.meal_period "
        "FROM journal j LEFT JOIN reversals r ON r.sale_seq = j.seq "
        f"WHERE {_REVERSIBLE} AND j.occurred_at_ms >= ? AND j.occurred_at_ms <= ?"
    )
    args: list[Any] = [since, now_ms]
    if card_id is not None:
        sql += " AND j.card_id = ?"
        args.append(card_id)
    sql += " ORDER BY j.seq DESC LIMIT ?"
    args.append(limit)
    return tuple(rf.Candidate(*r) for r in store.conn.execute(sql, args))


def offline_today(store: Store, now_ms: int) -> tuple[int, int]:
    """(count, fen) of this terminal's offline reversals of purse-paid sales on ``now_ms``'s day."""
    day = start_of_china_day_ms(now_ms)
    n, fen = store.conn.execute(
        "SELECT count(*), coalesce(sum(amount_fen), 0) FROM reversals WHERE offline = 1 "
        "AND status <> 'rejected' AND method <> 'ecny' AND occurred_at_ms >= ? AND occurred_at_ms < ?",
        (day, day + 86_400_000),
    ).fetchone()
    return int(n), int(fen)


def record(
    store: Store,
    *,
    terminal_id: str,
    canteen_id: str,
    sale: dict[str, Any],
    operator_card: str,
    occurred_at_ms: int,
    offline: bool,
    refund_no: str | None = None,
) -> Reversal:
    """Journal the reversal of ``sale`` (its journal row) with its outbox row, in one durable
    transaction; not sent before :func:`mark_announced`."""
    with write_txn(store.conn):
        seq = int(store.conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM reversals").fetchone()[0])
        r = Reversal(
            terminal_id=terminal_id,
            seq=seq,
            uuid=uuid7_hex(occurred_at_ms),
            sale_seq=sale["seq"],
            sale_uuid=sale["uuid"],
            canteen_id=canteen_id,
            operator_card=operator_card,
            amount_fen=sale["amount_fen"],
            occurred_at_ms=occurred_at_ms,
            method=sale["method"],
            offline=offline,
            refund_no=refund_no,
        )
        r.validate()
        store.conn.execute(
            "INSERT INTO reversals(seq, uuid, sale_seq, card_id, holder_id, amount_fen, subsidy_fen, "
            "self_fen, method, operator_card, offline, occurred_at_ms, reversal_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                r.uuid,
                r.sale_seq,
                sale["card_id"],
                sale["holder_id"],
                r.amount_fen,
                sale["subsidy_fen"],
                sale["self_fen"],
                r.method,
                operator_card,
                int(offline),
                occurred_at_ms,
                json.dumps(r.to_dict(), ensure_ascii=False),
            ),
        )
        store.conn.execute("INSERT INTO reversal_outbox(seq) VALUES (?)", (seq,))
    return r


def forget_unannounced(store: Store, seq: int) -> None:
    """Drop a reversal that was journaled but never announced nor sent (its gateway refund
    failed): the operator was told it did not happen."""
    with write_txn(store.conn):
        store.conn.execute("DELETE FROM reversal_outbox WHERE seq = ?", (seq,))
        store.conn.execute("DELETE FROM reversals WHERE seq = ? AND announced = 0", (seq,))


def mark_announced(store: Store, seq: int) -> None:
    with store.relaxed_txn():
        store.conn.execute("UPDATE reversals SET announced = 1 WHERE seq = ?", (seq,))


def unannounced(store: Store) -> list[Reversal]:
    return [
        Reversal.from_dict(json.loads(r[0]))
        for r in store.conn.execute("SELECT reversal_json FROM reversals WHERE announced = 0 ORDER BY seq")
    ]


def outbox_after(store: Store, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Unacknowledged reversals after ``after_seq``, oldest first, up to the first one not yet
    announced."""
    first = store.conn.execute("SELECT min(seq) FROM reversals WHERE announced = 0").fetchone()[0]
    return [
        (r[0], json.loads(r[1]))
        for r in store.conn.execute(
            "SELECT o.seq, r.reversal_json FROM reversal_outbox o JOIN reversals r ON r.seq = o.seq "
            "WHERE o.seq > ? AND o.seq < ? ORDER BY o.seq LIMIT ?",
            (after_seq, first or _MAX_SEQ, limit),
        )
    ]


def pending_count(store: Store) -> int:
    return int(store.conn.execute("SELECT count(*) FROM reversal_outbox").fetchone()[0])


def oldest_unsent_ms(store: Store) -> int | None:
    """The oldest reversal the server has not taken yet (a ``waiting`` one it has)."""
    return store.conn.execute(
        "SELECT min(r.occurred_at_ms) FROM reversal_outbox o JOIN reversals r ON r.seq = o.seq "
        "WHERE r.status = 'new'"
    ).fetchone()[0]


def apply_results(store: Store, results: tuple[ReversalResult, ...], terminal_id: str) -> dict[str, int]:
    """Settle answered reversals: a final answer leaves the outbox (``applied`` /
    ``rejected``); one the server keeps for its sale stays (``waiting``) and is sent again
    after a reconnect until it is final. Balances as with sales."""
    counts = {"applied": 0, "rejected": 0, "waiting": 0, "ignored": 0}
    with write_txn(store.conn):
        for r in results:
            row = store.conn.execute("SELECT uuid FROM reversals WHERE seq = ?", (r.seq,)).fetchone()
            if r.terminal_id != terminal_id or row is None or row[0] != r.uuid:
                counts["ignored"] += 1
                continue
            outcome = "waiting" if r.pending else "rejected" if r.rejected else "applied"
            store.conn.execute(
                "UPDATE reversals SET status = ?, reason = ? WHERE seq = ?",
                (outcome, None if r.pending else r.reason, r.seq),
            )
            if outcome != "waiting":
                store.conn.execute("DELETE FROM reversal_outbox WHERE seq = ?", (r.seq,))
            counts[outcome] += 1
            if r.holder_id and r.balance is not None:
                store.conn.execute(
                    "UPDATE holders SET subsidy_fen = ?, self_fen = ?, version = ?, subsidy_year = ?, "
                    "next_subsidy_fen = ?, expired_subsidy_fen = ? WHERE holder_id = ? AND version < ?",
                    (
                        r.balance.subsidy_fen,
                        r.balance.self_fen,
                        r.balance.version,
                        r.balance.subsidy_year,
                        r.balance.next_subsidy_fen,
                        r.balance.expired_subsidy_fen,
                        r.holder_id,
                        r.balance.version,
                    ),
                )
    return counts


# --- the desk: the operator's flow on the devices -----------------------------------------


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
