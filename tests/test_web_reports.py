"""Reports, the unit clerk's page and the operator's page: the figures are the report
functions' own, each role sees its scope only, every report downloads as CSV (BOM,
formula-safe) and xlsx, and the heat map carries its values as text."""

from __future__ import annotations

import io
import re

import pytest
from openpyxl import load_workbook

from server.closing import reports
from server.closing.quality import rate, set_bands
from server.closing.settlement import settle_quarter
from server.infra.db import write_txn
from server.registry import canteens, cards
from server.web.heatmap import heat_grid, level
from shared.clock import ms_from_china
from tests.money_world import MoneyWorld
from tests.test_web_money import error_beside, rows_of, signed_in, snapshot
from tests.web_support import post_form, text_of

TODAY = ms_from_china("2026-01-06T11:40")  # the clock fixture's day


@pytest.fixture
def city(conn, clock) -> MoneyWorld:  # noqa: ANN001
    """Jan 2026: U01 (K001, K003) and U02 (K002, K004) allocated; U01 staff eat at both
    canteens (C02 is U02's: cross-unit), U02 staff at C02; a QR sale; one overdraft."""
    w = MoneyWorld(conn, clock)
    with write_txn(conn):
        canteens.set_item(conn, "C01", "water", "矿泉水", 200, 250, clock.now_ms())
    w.allocate("U01", "2026Q1")
    w.allocate("U02", "2026Q1")
    assert w.sell("K001", 1200, TODAY, kind="meal", meal_period="lunch").status == "applied"
    assert (
        w.sell("K003", 1200, TODAY + 1000, method="qr", kind="meal", meal_period="lunch").status == "applied"
    )
    assert (
        w.sell("K001", 1000, TODAY + 2000, canteen="C02", kind="meal", meal_period="lunch").status
        == "applied"
    )
    assert (
        w.sell("K002", 1000, TODAY + 3000, canteen="C02", kind="meal", meal_period="lunch").status
        == "applied"
    )
    # K004 spends more than it holds offline: recorded as an overdraft, the card blocked
    assert w.sell("K004", 24_000, TODAY + 4000, canteen="C02").status == "applied"  # all its subsidy
    assert w.sell("K004", 1000, TODAY + 5000, canteen="C02", offline=True).status == "applied"
    return w


def sheet(resp):  # noqa: ANN001, ANN201
    assert resp.status_code == 200
    return load_workbook(io.BytesIO(resp.get_data())).active


def csv_lines(resp) -> list[str]:  # noqa: ANN001
    data = resp.get_data()
    assert resp.mimetype == "text/csv" and data.startswith("\ufeff".encode()), "UTF-8 with a BOM"
    return data.decode("utf-8-sig").splitlines()


# --- takings --------------------------------------------------------------------------------


def test_the_daily_report_is_the_report_functions_figures(app, conn, clock, city) -> None:  # noqa: ANN001
    admin = signed_in(app, conn, clock, "admin")
    html = text_of(admin.get("/reports/daily?date=2026-01-06"))
    start = ms_from_china("2026-01-06T00:00")
    totals = reports.sales_totals(conn, start, start + 86_400_000)
    assert totals["totals"]["amount_fen"] == 29_400
    assert "¥294.00" in html and "6 笔" in html
    canteens = {r[0]: r for r in rows_of(html, "report-canteens")}
    assert canteens["财政局食堂"][2] == "¥24.00" and canteens["教育局食堂"][2] == "¥270.00"
    units = {r[0]: r for r in rows_of(html, "report-units")}
    assert units["市财政局"][2] == "¥34.00"  # U01's staff, wherever they ate
    lines = csv_lines(admin.get("/reports/daily?date=2026-01-06&format=csv&table=units"))
    assert lines[0] == "单位编号,单位,笔数,金额,就餐经费支付,自费支付,数字人民币" and len(lines) == 3
    ws = sheet(admin.get("/reports/daily?date=2026-01-06&format=xlsx"))
    assert ws["A1"].value == "食堂编号" and sum(ws.cell(row=r, column=4).value for r in (2, 3)) == 294
    assert admin.get("/reports/daily?date=2026-13-01").status_code == 400  # said, not guessed


def test_an_operator_sees_only_their_own_canteens_takings(app, conn, clock, city) -> None:  # noqa: ANN001
    operator = signed_in(app, conn, clock, "operator")  # runs C01
    html = text_of(operator.get("/reports/quarterly?quarter=2026Q1"))
    assert "财政局食堂" in html and "教育局食堂" not in html and "¥24.00" in html
    lines = csv_lines(operator.get("/reports/quarterly?quarter=2026Q1&format=csv"))
    assert len(lines) == 2 and lines[1].startswith("C01,")
    assert operator.get("/reports/matrix").status_code == 403
    assert operator.get("/reports/overdrafts").status_code == 403
    methods = text_of(operator.get("/reports/methods?quarter=2026Q1"))
    assert "刷卡" in methods and "扫码" in methods and "全部食堂" not in methods
    assert operator.get("/reports/methods?canteen_id=C02").status_code == 403


# --- the heat map ---------------------------------------------------------------------------


def test_heat_levels_split_the_largest_cell_in_fifths() -> None:
    assert [level(a, 1000) for a in (0, 1, 200, 201, 999, 1000)] == [0, 1, 1, 2, 5, 5]
    assert level(5, 0) == 0


def test_the_dining_matrix_is_a_heat_map_with_its_values_as_text(app, conn, clock, city) -> None:  # noqa: ANN001
    admin = signed_in(app, conn, clock, "admin")
    html = text_of(admin.get("/reports/matrix?quarter=2026Q1"))
    body = html.split('id="dining-matrix"')[1].split("</table>")[0]
    u01 = body.split("市财政局")[1].split("</tr>")[0]
    cells = re.findall(r'<td class="num (heat-\d)( own)?">(.*?)</td>', u01, re.S)
    # U01 at C01 (own canteen) ¥24.00 and at C02 (cross-unit) ¥10.00; the largest cell is U02 at C02
    assert [(c[0], bool(c[1])) for c in cells] == [("heat-1", True), ("heat-1", False)]
    assert "¥24.00" in cells[0][2] and "2 笔" in cells[0][2] and "本单位食堂" in cells[0][2]
    assert 'class="num heat-5 own"' in body  # U02 at their own C02: ¥260.00, the top
    assert "其中跨单位" in html and "¥10.00" in html.split('id="matrix-summary"')[1]
    lines = csv_lines(admin.get("/reports/matrix?quarter=2026Q1&format=csv"))
    assert (
        lines[0] == "就餐人员单位,食堂,食堂所属单位,跨单位,笔数,金额"
        and "市财政局,教育局食堂,市教育局,是,1,¥10.00" in lines
    )
    ws = sheet(admin.get("/reports/matrix?quarter=2026Q1&format=xlsx"))
    assert sum(ws.cell(row=r, column=6).value for r in range(2, ws.max_row + 1)) == 294


def test_the_grid_keeps_every_unit_and_canteen_of_the_matrix() -> None:
    matrix = {
        "cells": [
            {
                "diner_unit_id": "U1",
                "canteen_id": "C1",
                "host_unit_id": "U1",
                "cross_unit": False,
                "count": 1,
                "amount_fen": 100,
            },
            {
                "diner_unit_id": "U2",
                "canteen_id": "C1",
                "host_unit_id": "U1",
                "cross_unit": True,
                "count": 3,
                "amount_fen": 500,
            },
        ]
    }
    grid = heat_grid(matrix, {"U1": "甲", "U2": "乙"}, {"C1": {"name": "一食堂", "unit_id": "U1"}})
    assert [r["unit_name"] for r in grid["rows"]] == ["甲", "乙"]
    assert [(c["level"], c["own"]) for r in grid["rows"] for c in r["cells"]] == [(1, True), (5, False)]
    assert grid["rows"][1]["cross_fen"] == 500 and grid["columns"][0]["amount_fen"] == 600
    assert grid["legend"][-1]["to_fen"] == 500


# --- quality, overdrafts, blocked cards -----------------------------------------------------


def test_quality_shows_scores_pay_and_ratings_in_scope(app, conn, clock, city) -> None:  # noqa: ANN001
    sale = conn.execute("SELECT uuid FROM sales WHERE canteen_id = 'C01' ORDER BY seq LIMIT 1").fetchone()[0]
    with write_txn(conn):
        rate(conn, "H001", sale, 4, 5, "=cmd|' /C calc'!A0 味道不错", clock.now_ms())
    clerk = signed_in(app, conn, clock, "clerk")  # U01: its canteen C01 only
    html = text_of(clerk.get("/reports/quality?quarter=2026Q1"))
    rows = rows_of(html, "quality-table")
    assert [r[0] for r in rows] == ["财政局食堂"]
    assert rows[0][3:8] == ["—", "100", "1", "4.00", "5.00"]  # no score yet: paid in full
    lines = csv_lines(clerk.get("/reports/quality?quarter=2026Q1&format=csv"))
    assert lines[0].startswith("食堂,所属单位,经营者,质量评分") and len(lines) == 2


def test_overdrafts_and_blocked_cards_in_the_clerks_unit_only(app, conn, clock, city) -> None:  # noqa: ANN001
    admin = signed_in(app, conn, clock, "admin")
    html = text_of(admin.get("/reports/overdrafts"))
    assert "透支合计 ¥10.00" in html and "职工4" in html
    blocked = text_of(admin.get("/reports/blocked-cards"))
    assert "K004" in blocked and "透支未补足" in blocked
    with write_txn(conn):
        cards.report_lost(conn, "K001", clock.now_ms())
    clerk = signed_in(app, conn, clock, "clerk")  # U01
    mine = text_of(clerk.get("/reports/blocked-cards"))
    assert "K001" in mine and "已挂失" in mine and "K004" not in mine
    assert "共 0 条" in text_of(clerk.get("/reports/overdrafts"))
    ws = sheet(admin.get("/reports/blocked-cards?format=xlsx"))
    assert [c.value for c in ws[1]] == ["卡号", "姓名", "单位", "原因", "自费余额"] and ws.max_row == 3


# --- the unit clerk's page ------------------------------------------------------------------


def test_the_clerks_page_shows_their_unit_allocation_canteens_and_staff_dining(
    app, conn, clock, city
) -> None:  # noqa: ANN001
    clerk = signed_in(app, conn, clock, "clerk")  # U01
    html = text_of(clerk.get("/unit?quarter=2026Q1"))
    assert "市财政局" in html and "在册</dt><dd>2 人" in html
    assert "按时拨付" in html and "¥600.00" in html
    assert [r[0] for r in rows_of(html, "unit-quality")] == ["财政局食堂"]
    dining = rows_of(html, "staff-dining")
    assert dining == [
        ["财政局食堂（本单位）", "市财政局", "2", "¥24.00"],
        ["教育局食堂", "市教育局", "1", "¥10.00"],
    ]
    assert "其中在其他单位食堂 ¥10.00" in html
    lines = csv_lines(clerk.get("/unit?quarter=2026Q1&format=csv"))
    assert lines[0] == "食堂,食堂所属单位,跨单位,笔数,金额" and len(lines) == 3


def test_a_clerk_enters_a_score_for_their_canteen_and_a_refused_one_changes_nothing(
    app, conn, clock, city
) -> None:  # noqa: ANN001
    clerk = signed_in(app, conn, clock, "clerk")
    form = text_of(clerk.get("/quality/score?canteen_id=C01&quarter=2026Q1"))
    assert "财政局食堂（C01）" in form and "教育局食堂" not in form  # only their unit's canteen
    before = snapshot(conn)
    for score, reason in (("101", "0 到 100"), ("", "请填写评分"), ("x", "")):
        refused = post_form(
            clerk, "/quality/score", {"canteen_id": "C01", "quarter": "2026Q1", "score": score}
        )
        assert refused.status_code == 400 and reason in error_beside(text_of(refused), "score")
        assert error_beside(text_of(refused), "score")
    other = post_form(clerk, "/quality/score", {"canteen_id": "C02", "quarter": "2026Q1", "score": "90"})
    assert other.status_code == 400  # not offered: not a valid choice
    assert snapshot(conn) == before
    with write_txn(conn):
        set_bands(conn, "C01", [[90, 100], [80, 98], [0, 95]])
    done = post_form(clerk, "/quality/score", {"canteen_id": "C01", "quarter": "2026Q1", "score": "85"})
    assert done.status_code == 302 and done.headers["Location"].startswith("/unit")
    assert "已录入 2026Q1 质量评分 85 分，结算时按 98% 支付" in text_of(clerk.get(done.headers["Location"]))
    assert conn.execute("SELECT score FROM quality_scores WHERE canteen_id = 'C01'").fetchone()[0] == 85


def test_a_score_of_a_settled_quarter_is_refused_beside_the_quarter(app, conn, clock, city) -> None:  # noqa: ANN001
    city.all_report(clock.now_ms())
    with write_txn(conn):
        settle_quarter(conn, "2025Q4", clock.now_ms())
    clerk = signed_in(app, conn, clock, "clerk")
    before = snapshot(conn)
    refused = post_form(clerk, "/quality/score", {"canteen_id": "C01", "quarter": "2025Q4", "score": "70"})
    assert refused.status_code == 400 and "已结算" in error_beside(text_of(refused), "quarter")
    assert snapshot(conn) == before


# --- the operator's page --------------------------------------------------------------------


def test_the_operators_page_shows_only_their_canteen(app, conn, clock, city) -> None:  # noqa: ANN001
    sale = conn.execute("SELECT uuid FROM sales WHERE canteen_id = 'C01' ORDER BY seq LIMIT 1").fetchone()[0]
    with write_txn(conn):
        rate(conn, "H001", sale, 2, 3, "米饭偏硬", clock.now_ms())
        c02 = conn.execute(
            "SELECT uuid FROM sales WHERE canteen_id = 'C02' AND holder_id = 'H002'"
        ).fetchone()[0]
        rate(conn, "H002", c02, 5, 5, "教育局食堂很好", clock.now_ms())
        third = conn.execute(
            "SELECT uuid FROM sales WHERE canteen_id = 'C01' AND holder_id = 'H003'"
        ).fetchone()[0]
        rate(conn, "H003", third, 1, 1, '=HYPERLINK("http://x","退钱")', clock.now_ms())
    operator = signed_in(app, conn, clock, "operator")
    home = operator.get("/")
    assert home.headers["Location"] == "/operator"  # an operator lands on their own page
    html = text_of(operator.get("/operator"))
    assert "财政局食堂" in html and "教育局食堂" not in html
    assert "¥24.00" in html.split('id="operator-today"')[1][:80]
    items = rows_of(html, "operator-items")
    assert [r[:4] for r in items] == [["财政局食堂", "water", "矿泉水", "¥2.00"]]
    assert items[0][4] == "¥2.50"
    ratings = text_of(operator.get("/operator/ratings"))
    assert "米饭偏硬" in ratings and "教育局食堂很好" not in ratings and "职工1" not in ratings
    lines = csv_lines(operator.get("/operator/ratings?format=csv"))
    assert len(lines) == 3 and any("米饭偏硬" in line for line in lines)
    assert any("'=HYPERLINK" in line for line in lines)  # a comment is never a formula
    ws = sheet(operator.get("/operator/ratings?format=xlsx"))
    comments = [c for row in ws.iter_rows(min_row=2) for c in row if c.value and "HYPERLINK" in str(c.value)]
    assert len(comments) == 1 and comments[0].data_type == "s"
