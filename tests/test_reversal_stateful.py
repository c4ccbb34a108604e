"""Reversals (冲正) in the money state machine (issue 13): any sequence of sales and
reversals — copies, reversals that arrive before their sale, twice for one sale, offline,
outside the window, across settlements and a year-end clearing — keeps every ledger
invariant, gives each purse back exactly what it paid, and never moves money to a purse
that did not pay.

It is :class:`tests.test_money_stateful.MoneyMachine` (allocations, top-ups, sales, late
sales, lost cards, settlements, clearings) with reversal rules added; after each reversal
the purses of every holder are compared with what the sale took, fen by fen.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from server.books import ledger
from server.books.periods import year_cutoff_ms
from shared.clock import china_datetime, start_of_china_day_ms
from shared.protocol import (
    Ack,
    Reversal,
    ReversalAck,
    ReversalResult,
    Sale,
    open_envelope,
    topics,
)
from shared.reversal_rules import DEFAULT_WINDOW_MINUTES, offline_refusal, window_refusal
from shared.risk_limits import MINUTE_MS, RiskLimits
from tests.helpers import signed_reversals
from tests.test_money_stateful import CANTEENS, HOLDERS, MoneyMachine

WINDOW_MS = DEFAULT_WINDOW_MINUTES * MINUTE_MS
LIMITS = RiskLimits()  # the machine's city sets no reversal limits: the defaults hold


class ReversalMachine(MoneyMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rseq = dict.fromkeys(CANTEENS, 0)
        self.reversal_acks: list[ReversalAck] = []
        self.reversed: dict[tuple[str, int], Reversal] = {}  # sale -> its applied reversal
        self.reversal_results: dict[str, ReversalResult] = {}  # uuid -> first answer
        self.reversals_sent: list[Reversal] = []
        self.offline_today: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self.waiting: list[tuple[Sale, Reversal]] = []  # reversals sent before their sale

    def _collect(self, topic: str, payload: bytes, retain: bool) -> bool:
        creds = next(c for c in self.terminals.values() if topic == topics.ack(c.terminal_id))
        env = open_envelope(payload, secret_for=lambda _s: bytes.fromhex(creds.secret_hex))
        if env.type == "reversal_ack":
            self.reversal_acks.append(ReversalAck.from_body(env.body))
        else:
            self.acks.append(Ack.from_body(env.body))
        return True

    def _send_reversal(self, r: Reversal) -> ReversalResult:
        creds = self.terminals[r.canteen_id]
        wire = signed_reversals(creds, [r], self.clock.now_ms())
        before = len(self.reversal_acks)
        self.worker.process([(topics.reversals(creds.terminal_id), wire)])
        assert len(self.reversal_acks) == before + 1
        [result] = self.reversal_acks[-1].results
        return result

    def _reversal(self, s: Sale, at_ms: int, offline: bool) -> Reversal:
        self.rseq[s.canteen_id] += 1
        return Reversal(
            s.terminal_id,
            self.rseq[s.canteen_id],
            uuid.uuid4().hex,
            s.seq,
            s.uuid,
            s.canteen_id,
            "OP1",
            s.amount_fen,
            at_ms,
            s.method,
            offline,
        )

    def _purses(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self.conn.execute(
                "SELECT id, balance_fen FROM accounts WHERE kind IN ('subsidy_purse', 'self_purse')"
            )
        }

    def _expected(self, s: Sale, r: Reversal) -> str | None:
        """What the server must decide, from the model."""
        if (s.terminal_id, s.seq) in self.reversed:
            return "sale_already_reversed"
        why = window_refusal(s.occurred_at_ms, r.occurred_at_ms, WINDOW_MS)
        if why is None and r.offline:
            n, fen = self.offline_today[(r.terminal_id, start_of_china_day_ms(r.occurred_at_ms))]
            why = offline_refusal(n, fen, r.amount_fen, LIMITS)
        return why

    def _check_applied(self, s: Sale, r: Reversal, result: ReversalResult, before: dict[str, int]) -> None:
        """Each purse got back exactly what the sale took from it; no other purse moved."""
        first = self.first_results[(s.terminal_id, s.seq)]
        assert (result.subsidy_fen, result.self_fen) == (first.subsidy_fen, first.self_fen)
        holder = first.holder_id
        year = china_datetime(s.occurred_at_ms).year
        row = self.conn.execute(
            "SELECT cleared_subsidy_fen FROM sales WHERE terminal_id = ? AND seq = ?", (s.terminal_id, s.seq)
        ).fetchone()
        refunded = self.conn.execute(
            "SELECT refunded_subsidy_fen FROM reversals WHERE uuid = ?", (r.uuid,)
        ).fetchone()[0]
        from_purse = first.subsidy_fen - row[0]
        expected = dict(before)
        sub = ledger.subsidy_purse(holder, year)
        if from_purse - refunded:
            expected[sub] = expected.get(sub, 0) + from_purse - refunded
        own = ledger.self_purse(holder)
        if first.self_fen:
            expected[own] = expected.get(own, 0) + first.self_fen
        after = self._purses()
        assert {k: v for k, v in after.items() if v or k in expected} == {
            k: v for k, v in expected.items() if v or k in after
        }
        assert refunded in (0, from_purse)  # all of it back in the purse, or all to the refund
        self.reversed[(s.terminal_id, s.seq)] = r
        if not refunded:
            self.subsidy_left[holder, year] += from_purse
        if r.offline:
            counted = self.offline_today[(r.terminal_id, start_of_china_day_ms(r.occurred_at_ms))]
            counted[0] += 1
            counted[1] += r.amount_fen
        event(f"reversal applied: self={first.self_fen > 0} cleared={row[0] > 0} refunded={refunded > 0}")

    # --- the operator's reversals ------------------------------------------------------------

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), minutes=st.integers(0, 12), offline=st.booleans())
    def reverse(self, data: st.DataObject, minutes: int, offline: bool) -> None:
        """The operator reverses one of the sales, some minutes after it (within the window
        or not, offline or not, maybe a sale already reversed)."""
        # a terminal's clock is never ahead of the server's by more than it may be: the
        # reversal is dated no later than now
        self._reverse(data.draw(st.sampled_from(self.sent)), minutes, offline)

    @precondition(lambda self: self.sent)
    @rule(minutes=st.integers(0, 9), offline=st.booleans())
    def reverse_the_latest(self, minutes: int, offline: bool) -> None:
        """The usual case: the sale just made (a late one, clawed back from a year-end
        refund, included)."""
        self._reverse(self.sent[-1], minutes, offline)

    @precondition(
        lambda self: self.clearings and any(s.occurred_at_ms < max(self.cutoffs()) for s in self.sent)
    )
    @rule(minutes=st.integers(0, 9))
    def reverse_a_sale_of_a_cleared_year(self, minutes: int) -> None:
        """A terminal offline across the year-end clearing reverses a 31 December sale: that
        year's subsidy is not put back into a purse nobody may spend, it follows the rest of
        the year's subsidy into the refund."""
        cutoff = max(self.cutoffs())
        self._reverse(
            max((s for s in self.sent if s.occurred_at_ms < cutoff), key=lambda s: s.occurred_at_ms),
            minutes,
            True,
        )

    def cutoffs(self) -> list[int]:
        return [year_cutoff_ms(y) for y in self.clearings]

    def _reverse(self, s: Sale, minutes: int, offline: bool) -> None:
        at = min(s.occurred_at_ms + minutes * MINUTE_MS, self.clock.now_ms())
        r = self._reversal(s, at, offline)
        expected = self._expected(s, r)
        before = self._purses()
        result = self._send_reversal(r)
        self.reversals_sent.append(r)
        self.reversal_results[r.uuid] = result
        if expected is None:
            assert result.status == "applied", (result, expected)
            self._check_applied(s, r, result, before)
        else:
            assert (result.status, result.reason) == ("rejected", expected)
            assert self._purses() == before
            event(f"reversal refused: {expected}")

    @precondition(lambda self: self.reversals_sent)
    @rule(data=st.data())
    def resend_reversal(self, data: st.DataObject) -> None:
        """A lost reversal ack: the copy gets the first decision, nothing moves again."""
        r = data.draw(st.sampled_from(self.reversals_sent))
        before = self._purses()
        result = self._send_reversal(r)
        first = self.reversal_results[r.uuid]
        assert result.status == "duplicate"
        assert (result.reason, result.subsidy_fen, result.self_fen) == (
            first.reason if first.status != "pending" else "pending",
            first.subsidy_fen,
            first.self_fen,
        )
        assert self._purses() == before

    @rule(
        holder=st.sampled_from(HOLDERS),
        canteen=st.sampled_from(CANTEENS),
        amount=st.integers(1, 15_000),
        minutes=st.integers(0, 9),
    )
    def reverse_before_the_sale_arrives(self, holder: str, canteen: str, amount: int, minutes: int) -> None:
        """The reversal reaches the server first (its sale's batch was lost): it waits,
        moves nothing, and is applied when the sale comes."""
        at = self.clock.now_ms() - minutes * MINUTE_MS
        self.seq[canteen] += 1
        s = Sale(
            f"T-{canteen}",
            self.seq[canteen],
            uuid.uuid4().hex,
            self.card[holder],
            canteen,
            amount,
            at - MINUTE_MS,
            kind="shop",
            subsidy_fen=amount,
        )
        r = self._reversal(s, at, False)
        before = self._purses()
        waiting = self._send_reversal(r)
        assert waiting.status == "pending" and self._purses() == before
        self.reversals_sent.append(r)
        self.reversal_results[r.uuid] = waiting
        acks = len(self.reversal_acks)
        year = china_datetime(s.occurred_at_ms).year
        left_before = self.subsidy_left[holder, year]
        self._sell_one(s)
        [unasked] = self.reversal_acks[acks:]
        assert unasked.in_reply_to == "pending"
        [result] = unasked.results
        assert result.uuid == r.uuid
        if window_refusal(s.occurred_at_ms, r.occurred_at_ms, WINDOW_MS) is None:
            assert result.status == "applied"
            # the purses as the sale alone left them (both were applied in one transaction)
            first = self.first_results[(s.terminal_id, s.seq)]
            cleared = self.conn.execute(
                "SELECT cleared_subsidy_fen FROM sales WHERE terminal_id = ? AND seq = ?",
                (s.terminal_id, s.seq),
            ).fetchone()[0]
            mid = dict(before)
            sub, own = ledger.subsidy_purse(holder_of(first), year), ledger.self_purse(holder_of(first))
            mid[sub] = mid.get(sub, 0) - (first.subsidy_fen - cleared)
            mid[own] = mid.get(own, 0) - first.self_fen
            self._check_applied(s, r, result, mid)
            assert self._purses() == {k: v for k, v in before.items()} | {
                k: v for k, v in self._purses().items() if k not in before and v == 0
            }
            assert self.subsidy_left[holder, year] == left_before  # the sale and its reversal cancel
        else:
            assert result.status == "rejected"
        self.reversal_results[r.uuid] = result

    def _sell_one(self, s: Sale) -> None:
        [r] = self._send([s])
        assert r.status == "applied", r
        holder = r.holder_id
        cleared = self.conn.execute(
            "SELECT cleared_subsidy_fen FROM sales WHERE terminal_id = ? AND seq = ?", (s.terminal_id, s.seq)
        ).fetchone()[0]
        year = china_datetime(s.occurred_at_ms).year
        self.subsidy_spent.append((holder, s.occurred_at_ms, r.subsidy_fen - cleared))
        self.subsidy_left[holder, year] -= r.subsidy_fen - cleared
        self.first_results[(s.terminal_id, s.seq)] = r
        self.sent.append(s)

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def each_reversal_applied_once(self) -> None:
        applied = self.conn.execute("SELECT count(*) FROM reversals WHERE status = 'applied'").fetchone()[0]
        posted = self.conn.execute("SELECT count(*) FROM txns WHERE kind = 'reversal'").fetchone()[0]
        assert applied == posted == len(self.reversed)

    @invariant()
    def reversed_sales_are_still_sales(self) -> None:
        """A reversal is a record of its own: the sale it reverses stays applied, unchanged."""
        for (tid, seq), r in self.reversed.items():
            row = self.conn.execute(
                "SELECT status, uuid, amount_fen FROM sales WHERE terminal_id = ? AND seq = ?", (tid, seq)
            ).fetchone()
            assert tuple(row) == ("applied", r.sale_uuid, r.amount_fen)


def holder_of(result: Any) -> str:
    assert result.holder_id is not None
    return str(result.holder_id)


TestReversalMachine = ReversalMachine.TestCase
TestReversalMachine.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_the_machine_reverses_money_it_can_see() -> None:
    """The purse snapshot the machine compares covers both purse kinds."""
    m = ReversalMachine()
    try:
        kinds: Any = {r[0] for r in m.conn.execute("SELECT DISTINCT kind FROM accounts")}
        assert {"subsidy_purse"} <= kinds
        assert set(m._purses()) == {
            r[0] for r in m.conn.execute("SELECT id FROM accounts WHERE kind LIKE '%_purse'")
        }
    finally:
        m.teardown()
