"""The double-entry ledger: invariants that protect every fen (the spend order: test_spend_order.py)."""

from __future__ import annotations

import sqlite3

import pytest

from server.books import ledger
from server.closing.check import all_violations
from server.infra.db import write_txn
from server.registry import funds
from tests.helpers import populated


def test_allocation_moves_money_through_the_special_accounts(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    world = populated(conn, clock.now_ms(), diners=6)
    per_unit = {u: sum(1 for d in world.diners if d.unit_id == u) for u in world.units}
    assert ledger.balance(conn, ledger.unit_budget("U01")) == -30_000 * per_unit["U01"]
    assert ledger.balance(conn, ledger.BUREAU_MEAL_FUND) == 0  # passed straight on
    assert ledger.balance(conn, ledger.SYSTEM_INCOME) == 0
    d = next(d for d in world.diners if d.unit_id == "U01")
    assert ledger.balance(conn, ledger.subsidy_purse(d.holder_id, 2026)) == 30_000
    assert all_violations(conn) == []


def test_the_same_quarter_cannot_be_allocated_twice(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with pytest.raises(Exception) as err, write_txn(conn):
        funds.allocate(conn, "U01", "2026Q4", None, clock.now_ms())
    assert getattr(err.value, "code", "") == "already_exists"


def test_check_finds_a_tampered_balance(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    world = populated(conn, clock.now_ms())
    conn.execute(
        "UPDATE accounts SET balance_fen = balance_fen + 1 WHERE id = ?",
        (ledger.subsidy_purse(world.diners[0].holder_id, 2026),),
    )
    codes = {v.code for v in all_violations(conn)}
    assert codes == {"ledger_sum_nonzero", "balance_mismatch"}


def test_a_float_cannot_be_stored_as_money(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with pytest.raises(sqlite3.Error):
        conn.execute(
            "INSERT INTO entries(txn_id, from_account, to_account, amount_fen) "
            "VALUES (1, 'bank:topup', 'system:income', 1.5)"
        )


def test_post_refuses_negative_amounts(conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError), write_txn(conn):
        ledger.post(conn, "x", [ledger.Move("a:1", "b:1", -5)], 0)
    assert conn.execute("SELECT count(*) FROM txns").fetchone()[0] == 0


def test_post_many_records_each_txn_with_its_own_entries(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    """Several txns in a few statements (the ingest batch): each id comes back for its own
    posting, an account moved by several moves once by their sum, a txn without moves kept."""
    now = clock.now_ms()
    postings = [
        ledger.Posting("sale", (ledger.Move("bank:topup", "holder:H9:self", 700),), "T/1"),
        ledger.Posting("sale", (), "T/2", "ecny"),
        ledger.Posting(
            "sale",
            (ledger.Move("holder:H9:self", "canteen:C9:payable", 300), ledger.Move("bank:topup", "x:y", 5)),
            "T/3",
        ),
    ]
    with write_txn(conn):
        ids = ledger.post_many(conn, postings, now)
    assert len(set(ids)) == 3
    for txn_id, p in zip(ids, postings, strict=True):
        txn = conn.execute("SELECT ref, memo FROM txns WHERE id = ?", (txn_id,)).fetchone()
        assert tuple(txn) == (p.ref, p.memo)
        entries = conn.execute(
            "SELECT from_account, to_account, amount_fen FROM entries WHERE txn_id = ? ORDER BY id", (txn_id,)
        ).fetchall()
        assert [tuple(e) for e in entries] == [(m.source, m.dest, m.amount_fen) for m in p.moves]
    assert ledger.balance(conn, "holder:H9:self") == 400
    assert ledger.balance(conn, "bank:topup") == -705
    assert ledger.ledger_sum(conn) == 0
    with pytest.raises(ValueError), write_txn(conn):
        ledger.post_many(conn, [postings[0], postings[0]], now)  # ids come back by ref: refs must differ
