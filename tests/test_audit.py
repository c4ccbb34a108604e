"""`check` catches each kind of damage to the money records (a check that cannot fail is a defect)."""

from __future__ import annotations

import sqlite3

import pytest

from server.books import ledger
from server.closing.check import all_violations
from server.closing.clearing import close_year
from server.closing.settlement import settle_quarter
from server.infra.db import write_txn
from shared.clock import FakeClock, ms_from_china
from tests.money_world import MoneyWorld


@pytest.fixture
def world(conn: sqlite3.Connection, clock: FakeClock) -> MoneyWorld:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.topup("K001", 3_000)
    w.sell("K001", 31_000)  # subsidy 30,000 + self 1,000
    w.sell("K003", 500, canteen="C02")
    w.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    with write_txn(conn):
        settle_quarter(conn, "2026Q1", w.clock.now_ms(), force=True)
    w.sell("K003", 700, at_ms=ms_from_china("2026-03-31T12:00"))  # late
    w.clock.set_ms(ms_from_china("2027-01-02T09:00"))
    with write_txn(conn):
        close_year(conn, 2026, w.clock.now_ms(), force=True)
    w.sell("K003", 400, at_ms=ms_from_china("2026-12-31T12:00"))  # after the clearing
    return w


def codes(conn: sqlite3.Connection) -> set[str]:
    return {v.code for v in all_violations(conn)}


def test_a_healthy_history_passes(world: MoneyWorld) -> None:
    assert all_violations(world.conn) == []


def test_a_changed_sale_split_is_caught(world: MoneyWorld) -> None:
    world.conn.execute(
        "UPDATE sales SET subsidy_fen = subsidy_fen - 1, self_fen = self_fen + 1 WHERE card_id = 'K001'"
    )
    # the ledger disagrees with the sale, and so do the sale's takings per slot and day
    assert codes(world.conn) == {"sale_split_mismatch", "sale_sums_mismatch"}


def test_an_edited_statement_is_caught(world: MoneyWorld) -> None:
    world.conn.execute(
        "UPDATE statements SET statement_json = replace(statement_json, '\"fee_fen\":', '\"fee_fen\":1') "
        "WHERE canteen_id = 'C01'"
    )
    assert codes(world.conn) == {"statement_tampered"}


def test_a_sale_slipped_into_a_closed_quarter_is_caught(world: MoneyWorld) -> None:
    world.conn.execute("DELETE FROM late_sales")
    assert "closed_quarter_changed" in codes(world.conn)


def test_a_payable_that_does_not_match_the_sales_is_caught(world: MoneyWorld) -> None:
    world.conn.execute(
        "UPDATE sales SET amount_fen = amount_fen + 1, self_fen = self_fen + 1 WHERE card_id = 'K001'"
    )
    assert {"payable_mismatch", "sale_split_mismatch"} <= codes(world.conn)


def test_a_clearing_line_that_does_not_match_the_ledger_is_caught(world: MoneyWorld) -> None:
    world.conn.execute("UPDATE clearing_lines SET amount_fen = amount_fen + 1 WHERE holder_id = 'H003'")
    assert codes(world.conn) == {"clearing_mismatch"}


def test_a_withdrawal_from_a_purse_is_caught(world: MoneyWorld) -> None:
    with write_txn(world.conn):
        ledger.post(
            world.conn, "cash_out", [ledger.Move(ledger.self_purse("H001"), ledger.BANK_TOPUP, 100)], 0
        )
    assert "purse_withdrawal" in codes(world.conn)


def test_an_allocation_that_credited_the_wrong_amount_is_caught(world: MoneyWorld) -> None:
    world.conn.execute("UPDATE allocations SET per_person_fen = 29000, total_fen = 58000")
    assert codes(world.conn) == {"allocation_mismatch"}


def test_a_late_sale_marked_settled_without_a_statement_is_caught(world: MoneyWorld) -> None:
    world.conn.execute("UPDATE late_sales SET statement_quarter = '2026Q1'")
    assert codes(world.conn) == {"settled_twice_or_missed"}
