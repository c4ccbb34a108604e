"""Reversals (冲正) under chaos (issue 13): the plan puts the operator's reversals among the
taps (the seed's, without changing its other taps or faults); the audit counts reversals
journaled against applied and catches one lost, doubled or never shown."""

from __future__ import annotations

import random
import sqlite3
import uuid

import pytest

from server.books import ledger
from server.infra.db import write_txn
from shared.clock import FakeClock
from shared.protocol import Reversal, topics
from simulator.chaos.audit import AuditResult, ReversalRow
from simulator.chaos.plan import OPERATOR_CARD, ChaosOptions, _taps, build_plan
from tests.helpers import signed_reversals
from tests.test_chaos import CARDS, Books


def test_the_plan_has_the_operators_reversals_and_keeps_the_seeds_taps_and_faults() -> None:
    opts = ChaosOptions(seed=7, terminals=4, diners=30, minutes=1.0)
    plan = build_plan(opts, CARDS)
    reversals = [t for t in plan.taps if t.line.startswith("reverse ")]
    assert len(reversals) >= 5 and all(t.line.split()[1] == OPERATOR_CARD for t in reversals)
    assert plan.to_json()["reversals"] == len(reversals)
    taps = [t for t in plan.taps if not t.line.startswith("reverse ")]
    rng = random.Random(opts.seed)
    assert taps == _taps(rng, opts, CARDS, plan.workload_s)  # the taps drawn as before reversals
    assert list(plan.taps) == sorted(plan.taps, key=lambda t: (t.at_s, t.terminal, t.card_id))


class ReversalBooks(Books):
    def __init__(self, conn: sqlite3.Connection, clock: FakeClock) -> None:
        super().__init__(conn, clock)
        self.reversals: list[ReversalRow] = []
        self.rseq = 0

    def reverse(self, row: object, *, send: bool = True) -> ReversalRow:
        self.rseq += 1
        sale_seq, sale_uuid, amount = row.seq, row.uuid, row.amount_fen  # type: ignore[attr-defined]
        r = Reversal(
            self.creds.terminal_id,
            self.rseq,
            uuid.uuid4().hex,
            sale_seq,
            sale_uuid,
            "C01",
            "OP1",
            amount,
            self.clock.now_ms(),
        )
        if send:
            wire = signed_reversals(self.creds, [r], 1)
            self.worker.process([(topics.reversals(self.creds.terminal_id), wire)])
        rr = ReversalRow(self.creds.terminal_id, r.seq, r.uuid, sale_seq, self.holder, amount)
        self.reversals.append(rr)
        self.events.append({"event": "reversed", "uuid": r.uuid})
        return rr

    def journaled_reversals(self) -> dict[str, list[ReversalRow]]:
        return {self.creds.terminal_id: self.reversals}


@pytest.fixture
def books(conn: sqlite3.Connection, clock: FakeClock) -> ReversalBooks:
    return ReversalBooks(conn, clock)


def codes(r: AuditResult) -> set[str]:
    return {v["code"] for v in r.violations}


def test_reversed_sales_balance_the_purses_and_pass(books: ReversalBooks) -> None:
    sold = books.sell(1200)
    books.sell(300)
    books.reverse(sold)
    r = books.audit()
    assert (r.approved, r.applied, r.reversals_approved, r.reversals_applied) == (2, 2, 1, 1)
    assert r.ok, r.violations  # the purses moved by 300: sales less reversals


def test_a_reversal_the_server_never_applied_is_lost(books: ReversalBooks) -> None:
    books.reverse(books.sell(500), send=False)
    r = books.audit()
    assert r.reversals_lost == 1 and "reversal_lost" in codes(r) and not r.ok


def test_a_reversal_never_shown_to_the_operator_is_caught(books: ReversalBooks) -> None:
    books.reverse(books.sell(500))
    books.events.pop()
    assert "reversal_not_announced" in codes(books.audit())


def test_a_sale_given_back_twice_is_caught_even_without_the_servers_guard(books: ReversalBooks) -> None:
    sold = books.sell(700)
    rr = books.reverse(sold)
    books.conn.execute("DROP INDEX txns_kind_ref")  # the audit must not rest on the server's constraints
    with write_txn(books.conn):
        ledger.post(
            books.conn,
            "reversal",
            [ledger.Move(ledger.canteen_payable("C01"), ledger.subsidy_purse(books.holder, 2026), 700)],
            books.clock.now_ms(),
            ref=f"{rr.terminal_id}/R{rr.seq}",
        )
    r = books.audit()
    assert r.reversals_doubled == 1 and not r.ok
    assert "purse_mismatch" in codes(r)  # and the purse holds money no sale or reversal explains
