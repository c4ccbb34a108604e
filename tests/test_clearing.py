"""Year-end clearing: unspent subsidy goes back to whoever paid it; self money stays."""

from __future__ import annotations

import sqlite3

import pytest

from server.books import ledger
from server.closing.check import all_violations
from server.closing.clearing import close_year
from server.infra.db import write_txn
from shared.clock import FakeClock, ms_from_china
from shared.errors import DomainError
from tests.money_world import MoneyWorld

NEW_YEAR = ms_from_china("2027-01-01T00:00")


@pytest.fixture
def world(conn: sqlite3.Connection, clock: FakeClock) -> MoneyWorld:
    return MoneyWorld(conn, clock, diners=4)  # H001, H003 in U01; H002, H004 in U02


def clear(w: MoneyWorld, year: int = 2026, refund_to: str = "unit", force: bool = True) -> dict:
    with write_txn(w.conn):
        report, _ = close_year(w.conn, year, w.clock.now_ms(), refund_to=refund_to, force=force)
    return report


def units(report: dict) -> dict[str, dict]:
    return {u["unit_id"]: u for u in report["units"]}


def subsidy(w: MoneyWorld, holder: str) -> int:
    return sum(ledger.subsidy_by_year(w.conn, holder).values())


def test_unspent_subsidy_is_refunded_to_the_unit_and_self_money_stays(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q1")
    world.allocate("U02", "2026Q1")
    world.topup("K001", 5_000)
    world.sell("K001", 10_000)
    world.clock.set_ms(NEW_YEAR + 86_400_000)
    report = clear(world)
    assert units(report)["U01"]["cleared_fen"] == 20_000 + 30_000
    assert units(report)["U02"]["cleared_fen"] == 2 * 24_000
    assert ledger.balance(world.conn, ledger.unit_refund("U01")) == 50_000
    assert all(subsidy(world, h) == 0 for h in ("H001", "H002", "H003", "H004"))
    assert ledger.balance(world.conn, ledger.self_purse("H001")) == 5_000  # untouched
    assert report["refund_to"] == "unit"
    assert all_violations(world.conn) == []


def test_the_refund_can_go_to_city_finance_and_is_still_reported_per_unit(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q4")
    world.allocate("U02", "2026Q4")
    world.clock.set_ms(NEW_YEAR + 1)
    report = clear(world, refund_to="city_finance")
    assert ledger.balance(world.conn, ledger.CITY_FINANCE_REFUND) == 2 * 30_000 + 2 * 24_000
    assert units(report)["U02"]["refund_fen"] == 48_000
    assert units(report)["U02"]["refund_account"] == ledger.CITY_FINANCE_REFUND
    assert report["refund_to"] == "city_finance"


def test_a_holder_who_moved_units_refunds_each_payer_newest_first(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q1")  # H001 gets 30,000 from U01
    world.conn.execute("UPDATE holders SET unit_id = 'U02' WHERE id = 'H001'")  # moved
    world.allocate("U02", "2026Q2")  # ... and 24,000 from U02
    world.sell("K001", 20_000)  # spends the oldest first: 20,000 of U01's
    world.clock.set_ms(NEW_YEAR + 1)
    clear(world)
    lines = world.conn.execute(
        "SELECT unit_id, amount_fen FROM clearing_lines WHERE holder_id = 'H001' ORDER BY rank"
    ).fetchall()
    assert [tuple(r) for r in lines] == [("U02", 24_000), ("U01", 10_000)]


def test_next_years_early_allocation_and_january_spending_are_not_cleared(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q4")
    world.clock.set_ms(ms_from_china("2026-12-20T10:00"))
    world.allocate("U01", "2027Q1")  # early: next year's money
    world.clock.set_ms(ms_from_china("2027-01-05T12:00"))
    world.sell("K001", 1_000)  # January lunch, before the clearing ran
    clear(world)
    assert (
        world.conn.execute("SELECT amount_fen FROM clearing_lines WHERE holder_id = 'H001'").fetchone()[0]
        == 30_000
    )
    assert subsidy(world, "H001") == 30_000 - 1_000


def test_a_late_sale_dated_before_the_cutoff_is_taken_out_of_the_refund(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q4")
    world.topup("K001", 2_000)
    world.clock.set_ms(NEW_YEAR + 3 * 86_400_000)
    world.allocate("U01", "2027Q1")
    clear(world)
    result = world.sell("K001", 1_500, at_ms=ms_from_china("2026-12-31T12:00"), offline=True)
    assert (result.status, result.subsidy_fen, result.self_fen) == ("applied", 1_500, 0)
    assert ledger.balance(world.conn, ledger.unit_refund("U01")) == 2 * 30_000 - 1_500
    assert subsidy(world, "H001") == 30_000  # this year's subsidy is untouched
    assert ledger.balance(world.conn, ledger.self_purse("H001")) == 2_000
    u01 = units(clear(world))["U01"]
    assert (u01["cleared_fen"], u01["late_sales_fen"], u01["refund_fen"]) == (60_000, 1_500, 58_500)
    assert (
        world.conn.execute("SELECT cleared_subsidy_fen FROM sales WHERE holder_id = 'H001'").fetchone()[0]
        == 1_500
    )
    assert all_violations(world.conn) == []


def test_a_late_sale_beyond_the_cleared_amount_is_paid_from_the_purses_now(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q4", per_person_fen=1_000)
    world.topup("K001", 5_000)
    world.clock.set_ms(NEW_YEAR + 1)
    clear(world)
    result = world.sell("K001", 2_500, at_ms=ms_from_china("2026-12-31T18:00"), offline=True)
    assert (result.subsidy_fen, result.self_fen) == (1_000, 1_500)
    assert ledger.balance(world.conn, ledger.unit_refund("U01")) == 1_000  # H003's refund only
    assert all_violations(world.conn) == []


def test_clearing_waits_for_the_year_to_end_and_for_terminals(world: MoneyWorld) -> None:
    with pytest.raises(DomainError) as err:
        clear(world)
    assert err.value.code == "period_open"
    world.clock.set_ms(NEW_YEAR + 1)
    with pytest.raises(DomainError) as err:
        clear(world, force=False)
    assert err.value.code == "terminals_behind"
    world.all_report(NEW_YEAR + 1)
    assert clear(world, force=False)["forced"] is False


def test_clearing_twice_returns_the_first_clearing(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q4")
    world.clock.set_ms(NEW_YEAR + 1)
    first = clear(world)
    world.clock.advance_ms(60_000)
    assert clear(world, refund_to="city_finance") == first
    assert world.conn.execute("SELECT count(*) FROM txns WHERE kind = 'year_end_clearing'").fetchone()[0] == 1


def test_a_cleared_year_takes_no_more_allocations(world: MoneyWorld) -> None:
    world.clock.set_ms(NEW_YEAR + 1)
    clear(world)
    with pytest.raises(DomainError) as err:
        world.allocate("U01", "2026Q4")
    assert err.value.code == "period_closed"


@pytest.mark.parametrize("clearing_day", ["2027-01-02T09:00", "2027-01-20T09:00"])
def test_the_refund_is_the_31_december_balance_whichever_january_day_the_clearing_runs(
    world: MoneyWorld, clearing_day: str
) -> None:
    world.allocate("U01", "2026Q4")  # H001 and H003: 30,000 each
    world.clock.set_ms(ms_from_china("2026-12-31T12:00"))
    world.sell("K001", 1_000)
    world.clock.set_ms(ms_from_china("2027-01-01T12:00"))
    r = world.sell("K001", 1_200)  # 4 January-like: before the clearing, no 2027 subsidy yet
    assert (r.subsidy_fen, r.self_fen, r.overdraft_fen) == (0, 1_200, 1_200)
    world.clock.set_ms(ms_from_china(clearing_day))
    world.sell("K003", 500)
    report = clear(world)
    assert units(report)["U01"]["refund_fen"] == 2 * 30_000 - 1_000
    assert all_violations(world.conn) == []


def test_next_years_december_allocation_pays_only_from_1_january(world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q4")
    world.clock.set_ms(ms_from_china("2026-12-20T10:00"))
    world.sell("K001", 30_000)  # 2026's subsidy spent
    world.allocate("U01", "2027Q1")
    world.topup("K001", 5_000)
    world.clock.set_ms(ms_from_china("2027-01-01T00:30"))
    dec = world.sell("K001", 1_200, ms_from_china("2026-12-31T23:59"))
    jan = world.sell("K001", 1_200, ms_from_china("2027-01-01T00:00"))
    assert (dec.subsidy_fen, dec.self_fen) == (0, 1_200)
    assert (jan.subsidy_fen, jan.self_fen) == (1_200, 0)
    assert ledger.balance(world.conn, ledger.subsidy_purse("H001", 2027)) == 30_000 - 1_200
