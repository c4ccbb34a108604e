"""The console's first pages and common pieces: the bureau dashboard (takings, the 15-minute
chart, terminals, alerts), the public directory, the diner's home, tables (sort, search,
pages) and their downloads (CSV with BOM, formula-safe; xlsx opened and checked). Sales go
through the real ingest path (tests/money_world.py)."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from openpyxl import load_workbook

from server.infra.db import write_txn
from server.web.charts import slot_chart
from server.web.dashboard_data import ONLINE_WITHIN_MS, Series, dashboard, sales_by_slot
from shared.clock import DAY_MS, ms_from_china
from shared.protocol import Status, seal_hmac, topics
from tests.helpers import populated
from tests.money_world import MoneyWorld
from tests.web_support import (
    DINER_HOLDER,
    DINER_STAFF_NO,
    diner_login,
    login,
    make_diner,
    make_staff,
    post_form,
    text_of,
)

NOON = ms_from_china("2026-01-06T12:00")  # the clock fixture's time, a Tuesday


@pytest.fixture
def city(conn, clock) -> MoneyWorld:  # noqa: ANN001
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.allocate("U02", "2026Q1")
    w.topup("K002", 5_000)
    return w


def status(w: MoneyWorld, canteen: str, **fields: object) -> None:
    creds = w.terminals[canteen]
    body = Status(state="online", clock_ms=w.clock.now_ms(), **fields).to_body()  # type: ignore[arg-type]
    wire = seal_hmac(
        "status", creds.terminal_id, body, bytes.fromhex(creds.secret_hex), w.clock.now_ms(), uuid.uuid4().hex
    )
    w.worker.process([(topics.status(creds.terminal_id), wire)])


# --- dashboard ----------------------------------------------------------------------------


def test_the_dashboard_shows_todays_takings_per_canteen_and_payment_method(conn, city, client) -> None:  # noqa: ANN001
    assert (
        city.sell("K001", 1200, ms_from_china("2026-01-06T11:40"), kind="meal", meal_period="lunch").status
        == "applied"
    )
    assert (
        city.sell(
            "K003", 1200, ms_from_china("2026-01-06T11:50"), method="qr", kind="meal", meal_period="lunch"
        ).status
        == "applied"
    )
    assert (
        city.sell(
            "K002", 1000, ms_from_china("2026-01-06T11:55"), canteen="C02", kind="meal", meal_period="lunch"
        ).status
        == "applied"
    )
    assert (
        city.sell("K002", 350, ms_from_china("2026-01-05T12:00"), canteen="C02").status == "applied"
    )  # yesterday

    d = dashboard(conn, NOON)
    assert d["takings"]["totals"] == {
        "count": 3,
        "amount_fen": 3400,
        "subsidy_fen": 3400,
        "self_fen": 0,
        "ecny_fen": 0,
    }
    assert [(c["canteen_name"], c["amount_fen"]) for c in d["takings"]["canteens"]] == [
        ("财政局食堂", 2400),
        ("教育局食堂", 1000),
    ]
    assert {m: v["amount_fen"] for m, v in d["methods"]["methods"].items()} == {"card": 2200, "qr": 1200}

    make_staff(conn, "admin", NOON)
    login(client, "admin1")
    html = text_of(client.get("/dashboard"))
    assert "¥34.00" in html and "¥24.00" in html and "扫码" in html and "刷卡" in html


def test_sales_per_15_minutes_today_against_the_same_weekday_last_week(conn, city) -> None:  # noqa: ANN001
    city.allocate("U01", "2025Q4")
    city.sell("K001", 1200, ms_from_china("2026-01-06T11:40"), kind="meal", meal_period="lunch")
    city.sell("K001", 500, ms_from_china("2025-12-30T07:05"), kind="meal", meal_period="breakfast")
    today, last_week = dashboard(conn, NOON)["series"]
    assert today.amounts_fen[11 * 4 + 2] == 1200  # 11:30–11:45
    assert today.amounts_fen[12 * 4] is None  # 12:00–12:15 has not happened yet
    assert last_week.amounts_fen[7 * 4] == 500 and last_week.amounts_fen[12 * 4] == 0
    assert sum(v or 0 for v in today.amounts_fen) == 1200

    svg = slot_chart([today, last_week], "今日 <对比>", "c")
    assert svg.count('class="bar"') == 1 and 'class="line"' in svg
    assert "今日 &lt;对比&gt;" in svg and "08:00" in svg and "style=" not in svg  # CSP: no inline style


def test_terminals_online_or_offline_with_last_sync_unsent_sales_and_clock_offset(conn, city, clock) -> None:  # noqa: ANN001
    status(city, "C01", pending=3, clock_offset_ms=-1500, watermark_ms=clock.now_ms())
    clock.advance_ms(10_000)
    status(city, "C02", pending=0)
    clock.advance_ms(ONLINE_WITHIN_MS - 5_000)
    fleet = {t["canteen_id"]: t for t in dashboard(conn, clock.now_ms())["terminals"]}
    assert fleet["C01"]["online"] is False  # last heard 65 s ago
    assert fleet["C02"]["online"] is True
    assert (fleet["C01"]["pending"], fleet["C01"]["clock_offset_ms"]) == (3, -1500)


def test_alerts_name_late_allocations_held_sales_laggards_and_the_last_ledger_check(
    conn, clock, client
) -> None:  # noqa: ANN001
    clock.set_ms(ms_from_china("2026-01-12T09:00"))  # the 2026Q1 allocation was due by the 10th
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    held = w.sell(
        "K001", 999, clock.now_ms() - 60_000, kind="meal", meal_period="lunch"
    )  # not the menu price
    assert held.status == "quarantined"
    a = dashboard(conn, clock.now_ms())["alerts"]
    assert [(u["unit_id"], u["status"]) for u in a["allocations"]] == [("U01", "late"), ("U02", "missing")]
    assert a["quarantined"] == {"pending": 1, "amount_fen": 999}
    assert a["quarter_behind"]["quarter"] == "2025Q4" and len(a["quarter_behind"]["terminals"]) == 2
    assert a["ledger_check"] is None

    make_staff(conn, "admin", clock.now_ms())
    login(client, "admin1")
    done = post_form(client, "/dashboard/check", {}, page="/dashboard")
    assert done.status_code == 302
    page = text_of(client.get("/dashboard"))
    assert "账本检查通过" in page and "市财政局（逾期拨付）" in page and "市教育局（未拨付）" in page
    assert dashboard(conn, clock.now_ms())["alerts"]["ledger_check"]["ok"] is True


# --- directory, diner ---------------------------------------------------------------------


def test_the_canteen_directory_is_public_and_searchable(conn, clock, client) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    page = text_of(client.get("/directory"))
    assert "财政局食堂" in page and "教育局食堂" in page and "11:30–13:30" in page and "¥12.00" in page
    found = text_of(client.get("/directory?q=教育"))
    assert "教育局食堂" in found and "财政局食堂" not in found


def test_the_diner_sees_both_purses_what_expires_and_which_purse_paid(conn, city, client, clock) -> None:  # noqa: ANN001
    with write_txn(conn):
        conn.execute("UPDATE holders SET staff_no = 'S-002' WHERE id = 'H002'")
    city.sell("K002", 25_000, ms_from_china("2026-01-06T11:45"), canteen="C02")  # ¥240 subsidy + ¥10 self
    make_diner(conn, "H002", "S-002", clock.now_ms())
    diner_login(client, "S-002")
    page = text_of(client.get("/me"))
    assert "¥0.00" in page and "¥40.00" in page  # subsidy used up, self ¥50 - ¥10
    assert "经费 ¥240.00 + 自费 ¥10.00" in page


def test_this_years_subsidy_expires_at_the_year_end(conn, client, clock) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())  # 2026Q4 allocated: ¥300 of 2026
    make_diner(conn, DINER_HOLDER, DINER_STAFF_NO, clock.now_ms())
    diner_login(client)
    page = text_of(client.get("/me"))
    assert "其中 ¥300.00 将于 2026 年 12 月 31 日到期" in page


# --- tables and downloads -----------------------------------------------------------------


@pytest.fixture
def clerk_view(conn, clock, client):  # noqa: ANN001, ANN201
    populated(conn, clock.now_ms(), diners=180)  # 60 in U01
    make_staff(conn, "admin", clock.now_ms())
    login(client, "admin1")
    return client


def rows_of(html: str, column: int = 0) -> list[str]:
    """One column's cells (text) of the page's table."""
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in body.split("<tr>")[1:]]
    return [re.sub(r"<[^>]+>", "", c[column]).strip() for c in cells]


def test_a_table_is_paged_sorted_and_searched_by_the_server(clerk_view) -> None:  # noqa: ANN001
    first = text_of(clerk_view.get("/people"))
    assert "共 180 条，第 1–50 条" in first and "第 1 / 4 页" in first
    assert first.count("<tr>") == 51  # header + 50: never the whole roster
    last = text_of(clerk_view.get("/people?page=4"))
    assert "第 151–180 条" in last
    desc = rows_of(text_of(clerk_view.get("/people?sort=staff_no&dir=desc")))
    assert desc[0] == "U03-0180" and desc == sorted(desc, reverse=True)
    assert 'aria-sort="descending"' in text_of(clerk_view.get("/people?sort=staff_no&dir=desc"))
    by_card = text_of(clerk_view.get("/people?q=c00042"))  # as typed, in small letters
    assert "共 1 条" in by_card and "U03-0042" in by_card
    assert "共 1 条" in text_of(clerk_view.get("/people?q=U02-0101"))  # a 工号
    names = rows_of(text_of(clerk_view.get("/people?q=王")), column=1)  # part of a name
    assert names and all("王" in name for name in names)
    # nonsense parameters fall back to the defaults instead of failing
    odd = clerk_view.get("/people?sort=1;drop&dir=sideways&page=-3&size=99999")
    assert odd.status_code == 200 and "第 1–50 条" in text_of(odd)


def test_downloads_are_csv_with_bom_and_xlsx_and_formula_safe(conn, clerk_view) -> None:  # noqa: ANN001
    with write_txn(conn):
        conn.execute("UPDATE holders SET name = '=HYPERLINK(\"http://x\")' WHERE id = 'H00001'")
    csv_resp = clerk_view.get("/people?q=U01-0001&format=csv")
    data = csv_resp.get_data()
    assert csv_resp.mimetype == "text/csv" and data.startswith("\ufeff".encode())
    assert "attachment" in csv_resp.headers["Content-Disposition"]
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0] == "工号,姓名,单位,状态,卡号,自费余额"
    assert "'=HYPERLINK" in lines[1] and len(lines) == 2

    xlsx = clerk_view.get("/people?format=xlsx&sort=staff_no")
    ws = load_workbook(io.BytesIO(xlsx.get_data())).active
    assert [c.value for c in ws[1]] == ["工号", "姓名", "单位", "状态", "卡号", "自费余额"]
    name = ws["B2"]
    assert name.value == '=HYPERLINK("http://x")' and name.data_type == "s"  # text, not a formula
    assert ws.max_row == 181
    money = [ws.cell(row=r, column=6) for r in range(2, 182)]
    assert all(isinstance(c.value, int | float) for c in money) and "¥" in money[0].number_format
    assert (
        sum(c.value for c in money) * 100
        == conn.execute("SELECT sum(balance_fen) FROM accounts WHERE id LIKE 'holder:%:self'").fetchone()[0]
    )


def test_sales_per_slot_ignores_rejected_sales(conn, city) -> None:  # noqa: ANN001
    city.sell("K001", 999, ms_from_china("2026-01-06T11:40"), kind="meal", meal_period="lunch")  # held
    assert sum(v or 0 for v in sales_by_slot(conn, NOON - 12 * 3_600_000)) == 0
    assert Series("x", [0] * (DAY_MS // 900_000)).amounts_fen[0] == 0


def test_the_pages_stylesheet_is_served_from_the_server_itself(client) -> None:  # noqa: ANN001
    page = text_of(client.get("/login"))
    href = re.search(r'<link rel="stylesheet" href="([^"]+)"', page)
    assert href and href.group(1).startswith("/static/")  # no CDN
    css = client.get(href.group(1))
    assert css.status_code == 200 and css.mimetype == "text/css" and b".table-wrap" in css.data
