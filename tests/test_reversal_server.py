"""Reversals (冲正) at the server: applied at most once, exactly mirroring the sale (issue 13).

A reversal is its own record, linked to a sale of the same terminal. The server checks it
against the sale it applied (uuid, amount, window, same day, offline limits), gives each fen
back to the purse that paid it, lowers the canteen's gross in the reversal's quarter (or, if
that quarter is settled, adjusts the next statement), waits for a sale it has not received,
and resolves a quarantined sale it names.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.books import ledger
from server.closing.check import all_violations
from server.closing.settlement import settle_quarter, settlement_document
from server.closing.statement_files import payout_csv, payout_lines
from server.infra.db import write_txn
from server.registry import canteens
from shared.clock import ms_from_china
from shared.errors import CATALOG
from shared.protocol import (
    ProtocolError,
    Reversal,
    ReversalBatch,
    ReversalResult,
    Sale,
    seal_hmac,
    topics,
)
from tests.helpers import signed_reversals
from tests.ingest_support import IngestCity

MINUTE = 60_000


class City(IngestCity):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rseq = 0

    def spend_down(self, card: str, keep_fen: int) -> None:
        """Shop sales until the card's subsidy is ``keep_fen``."""
        while (left := self.purses(card)["subsidy"] - keep_fen) > 0:
            [r] = self.send(self.new_sale(card, min(left, 5000)))
            assert r.status == "applied"

    def reversal(self, s: Sale, **kw: Any) -> Reversal:
        self.rseq += 1
        fields: dict[str, Any] = {
            "terminal_id": self.creds.terminal_id,
            "seq": self.rseq,
            "uuid": uuid.uuid4().hex,
            "sale_seq": s.seq,
            "sale_uuid": s.uuid,
            "canteen_id": s.canteen_id,
            "operator_card": "OP1",
            "amount_fen": s.amount_fen,
            "occurred_at_ms": self.clock.now_ms(),
            "method": s.method,
        }
        fields.update(kw)
        return Reversal(**fields)

    def reverse(self, *reversals: Reversal) -> list[ReversalResult]:
        wire = signed_reversals(self.creds, reversals, self.clock.now_ms())
        before = len(self.reversal_acks)
        self.worker.process([(topics.reversals(self.creds.terminal_id), wire)])
        return list(self.reversal_acks[before].results)

    def purses(self, card: str) -> dict[str, int]:
        h = self.holder(card)
        return {
            "subsidy": sum(ledger.subsidy_by_year(self.conn, h).values()),
            "self": ledger.balance(self.conn, ledger.self_purse(h)),
        }

    def payable(self) -> int:
        return ledger.balance(self.conn, ledger.canteen_payable("C01"))


@pytest.fixture
def city(tmp_path: Path) -> City:
    return City(tmp_path / "server.db")


def test_a_reversal_gives_each_purse_back_exactly_what_it_paid(city: City) -> None:
    card = city.card()
    h = city.holder(card)
    with write_txn(city.conn):
        ledger.post(
            city.conn,
            "topup",
            [ledger.Move(ledger.BANK_TOPUP, ledger.self_purse(h), 3000)],
            city.clock.now_ms(),
        )
    city.spend_down(card, 500)  # ¥5.00 of subsidy left: the sale is split 500 + 700
    before, payable = city.purses(card), city.payable()
    s = city.new_sale(card, 1200, subsidy_fen=500, self_fen=700)
    [r] = city.send(s)
    assert (r.status, r.subsidy_fen, r.self_fen) == ("applied", 500, 700)
    city.clock.advance_ms(2 * MINUTE)
    [rr] = city.reverse(city.reversal(s))
    assert (rr.status, rr.reason, rr.subsidy_fen, rr.self_fen) == ("applied", None, 500, 700)
    assert city.purses(card) == before
    assert rr.balance is not None and rr.balance.self_fen == before["self"]
    assert city.payable() == payable
    assert all_violations(city.conn) == []


def test_a_sale_is_reversed_once_and_a_copy_is_a_duplicate(city: City) -> None:
    card = city.card()
    s = city.new_sale(card, 800)
    city.send(s)
    first = city.reversal(s)
    [a] = city.reverse(first)
    [copy] = city.reverse(first)
    [second] = city.reverse(city.reversal(s))
    assert (a.status, copy.status, copy.reason) == ("applied", "duplicate", None)
    assert (second.status, second.reason) == ("rejected", "sale_already_reversed")
    assert city.conn.execute("SELECT count(*) FROM txns WHERE kind = 'reversal'").fetchone()[0] == 1
    assert all_violations(city.conn) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount_fen": 799}, "reversal_amount_mismatch"),
        ({"sale_uuid": "f" * 32}, "reversal_sale_mismatch"),
        ({"occurred_at_ms": "+11m"}, "reversal_outside_window"),
        ({"occurred_at_ms": "-1m"}, "reversal_before_sale"),
        ({"occurred_at_ms": "+2d"}, "reversal_time_future"),
        ({"canteen_id": "C02"}, "canteen_mismatch"),
    ],
)
def test_the_server_trusts_no_number_of_the_reversal(city: City, change: dict[str, Any], reason: str) -> None:
    card = city.card()
    s = city.new_sale(card, 800)
    city.send(s)
    before = city.purses(card), city.payable()
    at = change.get("occurred_at_ms")
    if isinstance(at, str):
        unit = {"m": MINUTE, "d": 1440 * MINUTE}[at[-1]]
        change = {**change, "occurred_at_ms": s.occurred_at_ms + int(at[:-1]) * unit}
        if unit == MINUTE:  # the reversal arrives when it was made
            city.clock.set_ms(max(city.clock.now_ms(), change["occurred_at_ms"]))
    [rr] = city.reverse(city.reversal(s, **change))
    assert (rr.status, rr.reason) == ("rejected", reason)
    assert (city.purses(card), city.payable()) == before
    assert all_violations(city.conn) == []


def test_the_window_is_the_canteens_and_a_day_boundary_refuses(city: City) -> None:
    with write_txn(city.conn):
        canteens.update(city.conn, "C01", city.clock.now_ms(), config={"reversal_window_minutes": 30})
    s = city.new_sale(city.card(), 800)
    city.send(s)
    city.clock.advance_ms(25 * MINUTE)
    [ok] = city.reverse(city.reversal(s))
    assert ok.status == "applied"
    late = city.new_sale(city.card(), 500, at_ms=ms_from_china("2026-11-26T23:55"))
    city.clock.set_ms(ms_from_china("2026-11-27T00:02"))
    city.send(late)
    [nextday] = city.reverse(city.reversal(late))
    assert (nextday.status, nextday.reason) == ("rejected", "reversal_other_day")


def test_a_reversal_before_its_sale_waits_and_is_applied_when_the_sale_arrives(city: City) -> None:
    card = city.card()
    before = city.purses(card)
    s = city.new_sale(card, 900)
    r = city.reversal(s)
    [waiting] = city.reverse(r)
    assert (waiting.status, waiting.pending, waiting.rejected) == ("pending", True, False)
    [copy] = city.reverse(r)
    assert (copy.status, copy.reason, copy.pending) == ("duplicate", "pending", True)
    [applied] = city.send(s)
    assert applied.status == "applied"
    unasked = city.reversal_acks[-1]
    assert unasked.in_reply_to == "pending"
    assert [(x.seq, x.status, x.subsidy_fen) for x in unasked.results] == [(r.seq, "applied", 900)]
    assert city.purses(card) == before and city.payable() == 0
    [later] = city.reverse(r)
    assert (later.status, later.reason) == ("duplicate", None)
    assert all_violations(city.conn) == []


def test_reversing_a_quarantined_sale_resolves_it_and_moves_nothing(city: City) -> None:
    card = city.card()
    before = city.purses(card), city.payable()
    s = city.new_sale(card, 1500, meal_period="lunch", kind="meal")  # staff at the visitor price
    [held] = city.send(s)
    assert held.status == "quarantined"
    [rr] = city.reverse(city.reversal(s))
    assert (rr.status, rr.subsidy_fen, rr.self_fen) == ("applied", 0, 0)
    state, by = city.conn.execute(
        "SELECT state, decided_by FROM quarantined_sales WHERE seq = ?", (s.seq,)
    ).fetchone()
    assert state == "rejected" and by.startswith("reversal:")
    assert (city.purses(card), city.payable()) == before
    [copy] = city.send(s)
    assert (copy.status, copy.reason) == ("duplicate", "quarantine_reversed")
    assert all_violations(city.conn) == []


def test_offline_reversals_are_bounded_per_terminal_and_day(city: City) -> None:
    card = city.card()
    results = []
    for _ in range(4):  # the default limit is three a day
        s = city.new_sale(card, 300)
        city.send(s)
        [rr] = city.reverse(city.reversal(s, offline=True))
        results.append((rr.status, rr.reason))
    assert results[:3] == [("applied", None)] * 3
    assert results[3] == ("rejected", "reversal_offline_limit")
    assert all_violations(city.conn) == []


def test_a_reversal_lowers_the_gross_of_its_quarter(city: City) -> None:
    card = city.card()
    s1, s2 = city.new_sale(card, 1000), city.new_sale(card, 700)
    city.send(s1, s2)
    city.reverse(city.reversal(s2))
    city.clock.set_ms(ms_from_china("2027-01-02T09:00"))
    with write_txn(city.conn):
        doc, _ = settle_quarter(city.conn, "2026Q4", city.clock.now_ms(), force=True)
    st = next(x for x in doc["statements"] if x["canteen_id"] == "C01")
    assert (st["gross_fen"], st["reversals_fen"], st["adjustments_fen"]) == (1000, 700, 0)
    assert city.payable() == 0
    assert all_violations(city.conn) == []


def test_a_reversal_after_its_quarter_closed_is_an_adjustment_in_the_next_statement(city: City) -> None:
    card = city.card()
    before = city.purses(card)
    city.clock.set_ms(ms_from_china("2026-12-31T12:00"))
    s = city.new_sale(card, 1000)
    city.send(s)
    r = city.reversal(s, occurred_at_ms=ms_from_china("2026-12-31T12:05"), offline=True)
    city.clock.set_ms(ms_from_china("2027-01-02T09:00"))
    with write_txn(city.conn):
        doc, _ = settle_quarter(city.conn, "2026Q4", city.clock.now_ms(), force=True)
    assert next(x for x in doc["statements"] if x["canteen_id"] == "C01")["gross_fen"] == 1000
    [rr] = city.reverse(r)  # the terminal was offline across the close
    assert rr.status == "applied"
    assert city.purses(card) == before
    assert city.payable() == -1000  # the operator was paid for it: owed back
    assert all_violations(city.conn) == []
    city.clock.set_ms(ms_from_china("2027-04-02T09:00"))
    with write_txn(city.conn):
        doc, _ = settle_quarter(city.conn, "2027Q1", city.clock.now_ms(), force=True)
    st = next(x for x in doc["statements"] if x["canteen_id"] == "C01")
    assert st["adjustments_fen"] == -1000
    assert [(a["reason"], a["quarter"], a["amount_fen"]) for a in st["adjustments"]] == [
        ("late_reversal", "2026Q4", -1000)
    ]
    assert (st["fee_fen"], st["net_fen"]) == (-5, -995)  # the 0.5 % fee on it is given back too
    assert city.payable() == 0
    assert all_violations(city.conn) == []
    payee = st["payee"]["name"]
    assert payee not in [line["payee"]["name"] for line in payout_lines(doc)]  # nothing paid out…
    # …and the debt is collected from the operator's next payment, not forgotten
    city.clock.set_ms(ms_from_china("2027-04-10T12:00"))
    city.send(city.new_sale(city.card(), 1500))
    city.clock.set_ms(ms_from_china("2027-07-02T09:00"))
    with write_txn(city.conn):
        q2, _ = settle_quarter(city.conn, "2027Q2", city.clock.now_ms(), force=True)
    net = next(x for x in q2["statements"] if x["canteen_id"] == "C01")["net_fen"]
    assert q2["carried_fen"] == {payee: -995}
    [line] = [x for x in payout_lines(q2) if x["payee"]["name"] == payee]
    assert (line["amount_fen"], line["carried_fen"]) == (net - 995, -995)
    assert "已扣上期应退 ¥9.95" in payout_csv(q2)
    # an operator's view (its canteens only) shows its own debt and no other payee's
    assert settlement_document(city.conn, "2027Q2", ["C01"])["carried_fen"] == {payee: -995}
    assert settlement_document(city.conn, "2027Q2", [])["carried_fen"] == {}


def test_a_digital_rmb_sales_reversal_is_its_gateway_refund_and_moves_no_purse(city: City) -> None:
    from server.sales.ecny import method_totals

    s = city.new_sale(None, 1500, method="ecny", subsidy_fen=0, credential="ecny:ORDER-1")  # type: ignore[arg-type]
    [r] = city.send(s)
    assert r.status == "applied"
    before = city.payable()
    [rr] = city.reverse(city.reversal(s, refund_no="ORDER-1-rev"))
    assert (rr.status, rr.subsidy_fen, rr.self_fen) == ("applied", 0, 0)
    assert city.payable() == before
    refunds = city.conn.execute("SELECT order_no, amount_fen FROM ecny_refunds").fetchall()
    assert [tuple(r) for r in refunds] == [("ORDER-1", 1500)]
    totals = method_totals(city.conn, "C01", s.occurred_at_ms - 1, s.occurred_at_ms + 3_600_000)
    assert totals["ecny_net_fen"] == 0 and totals["reversals"]["ecny"]["amount_fen"] == 1500
    assert all_violations(city.conn) == []


def test_check_lists_reversals_waiting_for_their_sale(city: City) -> None:
    from server.closing.check import reversal_summary

    s = city.new_sale(city.card(), 400)
    city.reverse(city.reversal(s))
    summary = reversal_summary(city.conn)
    assert summary["counts"] == {"applied": 0, "pending": 1, "rejected": 0}
    assert [(w["sale_seq"], w["amount_fen"]) for w in summary["waiting"]] == [(s.seq, 400)]


def test_a_reversed_meal_is_no_longer_counted_against_the_meal_limit(city: City) -> None:
    card = city.card()
    s = city.new_sale(card, 1200, meal_period="lunch", kind="meal")
    city.send(s)
    assert (
        city.conn.execute("SELECT changes_json FROM deltas ORDER BY version DESC")
        .fetchone()[0]
        .count('"lunch":1')
    )
    city.reverse(city.reversal(s))
    latest = city.conn.execute("SELECT changes_json FROM deltas ORDER BY version DESC").fetchone()[0]
    assert '"meals":{"day":"2026-11-26","taken":{}}' in latest  # the holder's lunch is free again


def test_a_second_reversal_while_the_first_waits_for_its_sale_is_refused(city: City) -> None:
    s = city.new_sale(city.card(), 600)
    [first] = city.reverse(city.reversal(s))
    [second] = city.reverse(city.reversal(s))  # a thief's, or a confused terminal's
    assert (first.status, second.status, second.reason) == ("pending", "rejected", "sale_already_reversed")
    city.send(s)
    assert [x.status for x in city.reversal_acks[-1].results] == ["applied"]
    assert city.worker.stats.dropped_messages == 0
    assert all_violations(city.conn) == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(
        ["seq", "sale_seq", "amount_fen", "occurred_at_ms", "method", "offline", "uuid", "sale_uuid", "extra"]
    ),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63),
        st.text(max_size=80),
        st.floats(allow_nan=True),
    ),
)
def test_garbled_reversals_are_refused_with_a_code_and_move_nothing(
    city: City, field: str, value: Any
) -> None:
    s = city.new_sale(city.card(), 300)
    city.send(s)
    before = city.purses(city.card()), city.payable()
    body = ReversalBatch((city.reversal(s),)).to_body()
    body["reversals"][0][field] = value
    try:
        wire = seal_hmac(
            "reversal_batch", city.creds.terminal_id, body, bytes.fromhex(city.creds.secret_hex), 1
        )
    except ProtocolError:  # a float cannot even be signed
        return
    na, nr = len(city.acks), len(city.reversal_acks)
    city.worker.process([(topics.reversals(city.creds.terminal_id), wire)])
    results = [r for a in city.reversal_acks[nr:] for r in a.results]
    refused = [a.reason for a in city.acks[na:]] + [r.reason for r in results if r.status == "rejected"]
    applied = [r for r in results if r.status == "applied"]
    assert len(city.acks[na:]) + len(city.reversal_acks[nr:]) == 1  # always answered, once
    if applied:  # the mutation left a valid reversal (e.g. another uuid): it is simply one
        return
    assert (city.purses(city.card()), city.payable()) == before
    if not any(r.pending for r in results):  # one naming a sale not received (yet) waits
        assert refused and all(code in CATALOG for code in refused)
    assert city.worker.stats.dropped_messages == 0
    assert all_violations(city.conn) == []
