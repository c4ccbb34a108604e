"""Quarterly settlement through the real database: statements, ledger, closed periods."""

from __future__ import annotations

import csv
import io
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from server.books import ledger
from server.books.settlement_rules import payee_payouts
from server.closing import quality
from server.closing.check import all_violations
from server.closing.settlement import settle_quarter, settlement_document
from server.closing.statement_files import payout_csv, statement_csv
from server.infra.db import write_txn
from server.registry import operators
from shared.clock import FakeClock, ms_from_china
from shared.errors import DomainError
from tests.money_world import OPERATOR, SELF_OPERATOR, MoneyWorld

Q1_END = ms_from_china("2026-04-01T00:00")


def settle(w: MoneyWorld, quarter: str = "2026Q1", force: bool = False) -> dict:
    with write_txn(w.conn):
        doc, _ = settle_quarter(w.conn, quarter, w.clock.now_ms(), force=force)
    return doc


def by_canteen(doc: dict) -> dict[str, dict]:
    return {s["canteen_id"]: s for s in doc["statements"]}


@pytest.fixture
def world(conn: sqlite3.Connection, clock: FakeClock) -> MoneyWorld:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.allocate("U02", "2026Q1")
    return w


def test_operator_is_paid_gross_less_quality_withholding_less_fee(world: MoneyWorld) -> None:
    with write_txn(world.conn):
        quality.set_bands(world.conn, "C01", [[90, 100], [80, 98], [0, 95]])
        quality.set_score(world.conn, "C01", "2026Q1", 85, world.clock.now_ms())
        operators.set_operator(world.conn, OPERATOR, bank_name="建设银行株洲分行", bank_account="4300 0001")
    for card in ("K001", "K002", "K003"):
        assert world.sell(card, 1_234).status == "applied"
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    world.all_report(Q1_END)
    st = by_canteen(settle(world))["C01"]
    gross = 3 * 1_234
    withheld = 74  # 3702 * 2% = 74.04
    fee = 18  # 0.5% of 3628 = 18.14
    assert (st["gross_fen"], st["pay_pct"], st["withheld_fen"], st["fee_fen"], st["net_fen"]) == (
        gross,
        98,
        withheld,
        fee,
        gross - withheld - fee,
    )
    assert ledger.balance(world.conn, ledger.operator_payout(OPERATOR)) == gross - withheld - fee
    assert ledger.balance(world.conn, ledger.FEE_REVENUE) == fee
    assert ledger.balance(world.conn, ledger.QUALITY_WITHHELD) == withheld
    assert ledger.balance(world.conn, ledger.canteen_payable("C01")) == 0
    assert all_violations(world.conn) == []


def test_self_operated_canteen_pays_no_fee(world: MoneyWorld) -> None:
    world.sell("K002", 100_001, canteen="C02")
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    world.all_report(Q1_END)
    st = by_canteen(settle(world))["C02"]
    assert (st["self_operated"], st["fee_fen"], st["net_fen"]) == (True, 0, 100_001)
    assert ledger.balance(world.conn, ledger.operator_payout(SELF_OPERATOR)) == 100_001


def test_an_open_quarter_cannot_be_settled(world: MoneyWorld) -> None:
    with pytest.raises(DomainError) as err:
        settle(world)
    assert err.value.code == "period_open"


def test_settlement_waits_for_terminals_behind_unless_forced(world: MoneyWorld) -> None:
    world.sell("K001", 1_000)
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    world.report_watermark("C01", Q1_END + 1)
    with pytest.raises(DomainError) as err:
        settle(world)
    late_tid = world.terminals["C02"].terminal_id
    assert err.value.code == "terminals_behind" and late_tid in err.value.detail
    assert settlement_document(world.conn, "2026Q1") is None  # the refusal changed nothing
    doc = settle(world, force=True)
    assert doc["forced"] is True
    assert [t["terminal_id"] for t in doc["incomplete_terminals"]] == [late_tid]


def test_a_closed_quarter_never_changes_and_settling_again_returns_it(world: MoneyWorld) -> None:
    world.sell("K001", 1_000)
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    first = settle(world, force=True)
    world.sell("K001", 5_000, at_ms=ms_from_china("2026-03-31T12:00"))  # late, dated in Q1
    again = settle(world, force=True)
    assert again == first
    assert world.conn.execute("SELECT count(*) FROM txns WHERE kind = 'settlement'").fetchone()[0] == 1
    with pytest.raises(DomainError) as err, write_txn(world.conn):
        quality.set_score(world.conn, "C01", "2026Q1", 60, world.clock.now_ms())
    assert err.value.code == "period_closed"


def test_a_late_sale_is_a_dated_adjustment_in_the_next_statement(world: MoneyWorld) -> None:
    with write_txn(world.conn):
        quality.set_bands(world.conn, "C01", [[90, 100], [0, 90]])
        quality.set_score(world.conn, "C01", "2026Q1", 50, world.clock.now_ms())
    world.sell("K001", 1_000)
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    settle(world, force=True)
    late = world.sell("K003", 2_000, at_ms=ms_from_china("2026-03-30T12:10"), offline=True)
    assert late.status == "applied"
    world.sell("K003", 3_000)  # an ordinary Q2 sale
    world.clock.set_ms(ms_from_china("2026-07-01T08:00"))
    st = by_canteen(settle(world, "2026Q2", force=True))["C01"]
    assert st["gross_fen"] == 3_000
    assert st["adjustments"] == [
        {
            "date": "2026-03-30",
            "quarter": "2026Q1",
            "reason": "late",
            "count": 1,
            "amount_fen": 2_000,
            "pay_pct": 90,
            "withheld_fen": 200,
        }
    ]
    assert st["withheld_fen"] == 200  # Q2 is unscored: pays in full; the Q1 line keeps Q1's 90 %
    assert st["gross_fen"] + st["adjustments_fen"] == st["withheld_fen"] + st["fee_fen"] + st["net_fen"]
    assert ledger.balance(world.conn, ledger.canteen_payable("C01")) == 0
    assert all_violations(world.conn) == []


def test_sales_after_the_quarter_end_wait_in_the_payable(world: MoneyWorld) -> None:
    world.sell("K001", 1_000)
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    world.sell("K001", 700)  # Q2, before Q1 is settled
    st = by_canteen(settle(world, force=True))["C01"]
    assert st["gross_fen"] == 1_000
    assert ledger.balance(world.conn, ledger.canteen_payable("C01")) == 700


def test_quarters_are_settled_in_order(world: MoneyWorld) -> None:
    world.clock.set_ms(ms_from_china("2026-07-02T09:00"))
    settle(world, "2026Q1", force=True)
    with pytest.raises(DomainError) as err:
        settle(world, "2026Q3", force=True)
    assert err.value.code in ("period_out_of_order", "period_open")
    world.clock.set_ms(ms_from_china("2026-10-02T09:00"))
    with pytest.raises(DomainError) as err:
        settle(world, "2026Q3", force=True)
    assert err.value.code == "period_out_of_order"


def test_the_first_settlement_sweeps_up_earlier_sales(world: MoneyWorld) -> None:
    world.sell("K001", 900, at_ms=ms_from_china("2025-12-31T12:00"))
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    st = by_canteen(settle(world, force=True))["C01"]
    assert [(a["date"], a["reason"], a["amount_fen"]) for a in st["adjustments"]] == [
        ("2025-12-31", "before_first_settlement", 900)
    ]
    assert ledger.balance(world.conn, ledger.canteen_payable("C01")) == 0


def test_digital_rmb_sales_are_not_settled_from_the_ledger(world: MoneyWorld) -> None:
    world.sell(None, 800, method="ecny", subsidy_fen=0)  # type: ignore[arg-type]
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    assert by_canteen(settle(world, force=True))["C01"]["gross_fen"] == 0


def test_statement_and_payout_files_have_chinese_headers(world: MoneyWorld) -> None:
    with write_txn(world.conn):
        operators.set_operator(
            world.conn,
            OPERATOR,
            company_name="株洲湘味餐饮有限公司",
            bank_name="建设银行株洲分行",
            bank_account="43050000000001",
        )
    world.sell("K001", 10_000)
    world.sell("K002", 5_000, canteen="C02")
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    doc = settle(world, force=True)
    rows = list(csv.reader(io.StringIO(statement_csv(doc).lstrip("\ufeff"))))
    assert rows[0][:5] == ["季度", "类型", "日期", "原属季度", "食堂编号"]
    c01 = next(r for r in rows if r[4] == "C01")
    assert c01[rows[0].index("应付金额")] == "¥99.50"
    payout = list(csv.reader(io.StringIO(payout_csv(doc).lstrip("\ufeff"))))
    assert payout[0][:6] == ["收款人", "收款单位全称", "开户银行", "银行账号", "金额(分)", "金额"]
    lines = {r[0]: r for r in payout[1:]}
    assert lines[OPERATOR][:6] == [
        OPERATOR,
        "株洲湘味餐饮有限公司",
        "建设银行株洲分行",
        "43050000000001",
        "9950",
        "¥99.50",
    ]
    assert lines[SELF_OPERATOR][4:6] == ["5000", "¥50.00"] and lines[SELF_OPERATOR][-1] == "缺少银行账号"


PAYEES = ["甲公司", "乙公司", "丙公司"]


@given(
    hs.lists(
        hs.dictionaries(
            hs.sampled_from(["甲公司", "乙公司", "丙公司"]), hs.integers(-50_000, 50_000), max_size=3
        ),
        max_size=8,
    )
)
def test_payee_payouts_carry_a_debt_forward_and_never_make_or_lose_a_fen(
    quarters: list[dict[str, int]],
) -> None:
    """Quarter after quarter: what is paid plus what is still owed equals every net so far;
    nobody is paid while owing; a debt only shrinks by later nets."""
    owed: dict[str, int] = {}
    paid_total = 0
    for nets in quarters:
        before = dict(owed)
        paid, owed = payee_payouts(owed, nets)
        assert all(v > 0 for v in paid.values()) and all(v < 0 for v in owed.values())
        assert not set(paid) & set(owed)
        assert sum(paid.values()) + sum(owed.values()) == sum(before.values()) + sum(nets.values())
        for payee, amount in paid.items():
            assert amount == before.get(payee, 0) + nets.get(payee, 0)
        paid_total += sum(paid.values())
    every_net = sum(sum(q.values()) for q in quarters)
    assert paid_total + sum(owed.values()) == every_net
