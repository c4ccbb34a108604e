"""The money pages of the console: allocations against their due date, making one, self
top-ups, settling a quarter (preview, then close; statements and payout list as CSV and
xlsx) and the year-end clearing (preview per unit, the refund destination, then confirm).

Money moves through the real services (tests/money_world.py sells through the ingest worker);
each refused form is checked to have changed nothing, byte for byte, in the money tables.
"""

from __future__ import annotations

import io
import re

import pytest
from openpyxl import load_workbook

from server.app import create_app
from server.closing.settlement import settlement_document
from server.closing.statement_files import statement_csv
from server.infra.db import open_db, write_txn
from server.registry import operators
from server.web.rehearsal import figures_digest, rehearse
from shared.clock import ms_from_china
from shared.errors import DomainError
from tests.money_world import OPERATOR, MoneyWorld
from tests.web_support import csrf_of, login, make_staff, post_form, text_of

DEC = ms_from_china("2025-12-15T12:10")
MONEY_TABLES = (
    "accounts",
    "txns",
    "entries",
    "allocations",
    "settlement_periods",
    "statements",
    "clearings",
    "clearing_lines",
    "late_sales",
    "quality_scores",
    "deltas",
)


def snapshot(conn) -> dict[str, list[tuple]]:  # noqa: ANN001
    """Every row of every table money lives in: a refused action must leave it all as it was."""
    return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2")] for t in MONEY_TABLES}


@pytest.fixture
def city(conn, clock) -> MoneyWorld:  # noqa: ANN001
    return MoneyWorld(conn, clock)


@pytest.fixture
def admin(app, conn, clock, city):  # noqa: ANN001, ANN201
    make_staff(conn, "admin", clock.now_ms())
    client = app.test_client()
    assert login(client, "admin1").status_code == 302
    return client


def signed_in(app, conn, clock, role: str):  # noqa: ANN001, ANN201
    make_staff(conn, role, clock.now_ms())
    client = app.test_client()
    assert login(client, f"{role}1").status_code == 302
    return client


def error_beside(html: str, field: str) -> str:
    m = re.search(rf'<p class="error" id="{field}-error">(.*?)</p>', html, re.S)
    return m.group(1) if m else ""


def last_quarter_sold(city: MoneyWorld) -> None:
    """2025Q4 allocated to both units and sold at both canteens; every terminal past its end."""
    city.allocate("U01", "2025Q4")
    city.allocate("U02", "2025Q4")
    assert city.sell("K001", 1200, DEC, kind="meal", meal_period="lunch").status == "applied"
    assert city.sell("K003", 1200, DEC + 60_000, kind="meal", meal_period="lunch").status == "applied"
    assert (
        city.sell("K001", 1000, DEC + 120_000, canteen="C02", kind="meal", meal_period="lunch").status
        == "applied"
    )
    city.all_report(city.clock.now_ms())


# --- allocations ----------------------------------------------------------------------------


def test_allocation_status_per_unit_against_the_10th(app, conn, clock, city) -> None:  # noqa: ANN001
    clock.set_ms(ms_from_china("2026-01-12T09:00"))
    city.allocate("U01", "2026Q1")  # on the 12th: late
    admin = signed_in(app, conn, clock, "admin")
    html = text_of(admin.get("/money/allocations?quarter=2026Q1"))
    assert "截止：2026年01月10日" in html
    rows = {r[1]: r for r in rows_of(html)}
    assert rows["市财政局"][2] == "逾期拨付" and rows["市财政局"][6] == "¥600.00"  # 2 people × ¥300
    assert rows["市教育局"][2] == "逾期未拨付" and rows["市教育局"][6] == "¥0.00"
    assert "逾期拨付 1 个单位" in html and "逾期未拨付 1 个单位" in html


def rows_of(html: str, table_id: str | None = None) -> list[list[str]]:
    if table_id:
        html = html.split(f'id="{table_id}"')[1]
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    return [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
        for row in body.split("<tr")[1:]
    ]


def test_the_admin_allocates_a_quarter_from_the_form(conn, city, admin) -> None:  # noqa: ANN001
    page = text_of(admin.get("/money/allocate?quarter=2026Q1"))
    assert "市教育局（U02）" in page and "¥240.00" in page  # the unit's standard shown beside
    done = post_form(admin, "/money/allocate", {"unit_id": "U02", "quarter": "2026Q1", "per_person": ""})
    assert done.status_code == 302 and "/money/allocations" in done.headers["Location"]
    row = conn.execute(
        "SELECT per_person_fen, headcount, total_fen FROM allocations WHERE unit_id = 'U02'"
    ).fetchone()
    assert tuple(row) == (24_000, 2, 48_000)
    assert "已拨付 市教育局 2026Q1 就餐经费：每人 ¥240.00 × 2 人 = ¥480.00" in text_of(
        admin.get(done.headers["Location"])
    )


@pytest.mark.parametrize(
    ("form", "field", "reason"),
    [
        ({"unit_id": "U01", "quarter": "2026Q1", "per_person": ""}, "quarter", "该单位本季度已拨付"),
        ({"unit_id": "U02", "quarter": "2026Q1", "per_person": "12.345"}, "per_person", "最多两位小数"),
        ({"unit_id": "U02", "quarter": "2026Q1", "per_person": "0"}, "per_person", "大于零"),
        (
            {"unit_id": "U02", "quarter": "2026Q1", "per_person": "3000.01"},
            "per_person",
            "上限为每人 ¥3000.00",
        ),
        ({"unit_id": "U09", "quarter": "2026Q1", "per_person": ""}, "unit_id", "有效"),
        ({"unit_id": "U02", "quarter": "2031Q1", "per_person": ""}, "quarter", "有效"),
    ],
)
def test_a_refused_allocation_changes_nothing_and_says_why_beside_the_field(
    conn, city, admin, form: dict[str, str], field: str, reason: str
) -> None:  # noqa: ANN001
    city.allocate("U01", "2026Q1")
    before = snapshot(conn)
    resp = post_form(admin, "/money/allocate", form)
    assert resp.status_code == 400
    assert reason in error_beside(text_of(resp), field)
    assert snapshot(conn) == before


def test_a_clerk_allocates_only_for_their_own_unit(app, conn, clock, city) -> None:  # noqa: ANN001
    clerk = signed_in(app, conn, clock, "clerk")  # of U01
    page = text_of(clerk.get("/money/allocate"))
    assert "市财政局（U01）" in page and "市教育局" not in page
    before = snapshot(conn)
    refused = post_form(clerk, "/money/allocate", {"unit_id": "U02", "quarter": "2026Q1", "per_person": ""})
    assert refused.status_code == 400 and snapshot(conn) == before
    done = post_form(clerk, "/money/allocate", {"unit_id": "U01", "quarter": "2026Q1", "per_person": "250"})
    assert done.status_code == 302 and done.headers["Location"].startswith("/unit")
    assert conn.execute("SELECT total_fen FROM allocations WHERE unit_id = 'U01'").fetchone()[0] == 50_000


# --- self top-up ----------------------------------------------------------------------------


def self_fen(conn, holder: str) -> int:  # noqa: ANN001
    return conn.execute(
        "SELECT balance_fen FROM accounts WHERE id = ?", (f"holder:{holder}:self",)
    ).fetchone()[0]


def test_a_top_up_credits_the_self_purse_once_per_bank_reference(conn, city, admin) -> None:  # noqa: ANN001
    done = post_form(admin, "/money/topup", {"card_id": "K002", "amount": "50.5", "ref": "BANK-1"})
    assert done.status_code == 302 and self_fen(conn, "H002") == 5050
    assert "自费余额 ¥50.50" in text_of(admin.get("/money/topup"))
    before = snapshot(conn)
    again = post_form(admin, "/money/topup", {"card_id": "K002", "amount": "50.5", "ref": "BANK-1"})
    assert again.status_code == 400 and "已经入账" in error_beside(text_of(again), "ref")
    for form, field in (
        ({"card_id": "K999", "amount": "10", "ref": ""}, "card_id"),
        ({"card_id": "K002", "amount": "ten", "ref": ""}, "amount"),
        ({"card_id": "K002", "amount": "5000.01", "ref": ""}, "amount"),
        ({"card_id": "K002", "amount": "-3", "ref": ""}, "amount"),
        ({"card_id": "", "amount": "3", "ref": ""}, "card_id"),
    ):
        refused = post_form(admin, "/money/topup", form)
        assert refused.status_code == 400 and error_beside(text_of(refused), field), form
    assert snapshot(conn) == before


# --- settlement -----------------------------------------------------------------------------


def test_the_preview_shows_every_statement_and_books_nothing(conn, city, admin) -> None:  # noqa: ANN001
    last_quarter_sold(city)
    before = snapshot(conn)
    page = admin.get("/money/settlements/2025Q4")
    html = text_of(page)
    assert page.status_code == 200 and "预览（尚未结账）" in html
    statements = {r[0]: r for r in rows_of(html, "statements")}
    c01 = next(v for k, v in statements.items() if k.startswith("财政局食堂"))
    c02 = next(v for k, v in statements.items() if k.startswith("教育局食堂"))
    # C01: ¥24.00, no score (paid in full), fee 0.5 % = 12 fen; C02 self-operated: no fee
    assert (c01[3], c01[9], c01[10]) == ("¥24.00", "¥0.12", "¥23.88")
    assert (c02[3], c02[9], c02[10]) == ("¥10.00", "¥0.00", "¥10.00")
    assert "未录入质量评分" in c01[12]
    assert "确认结账" in html
    assert snapshot(conn) == before  # previewing booked nothing
    assert settlement_document(conn, "2025Q4") is None


def close_form(client, quarter: str, **data: str):  # noqa: ANN001, ANN201
    page = text_of(client.get(f"/money/settlements/{quarter}"))
    digest = re.search(r'name="digest" type="hidden" value="([0-9a-f]+)"', page) or re.search(
        r'id="digest" name="digest" type="hidden" value="([0-9a-f]+)"', page
    )
    assert digest, "the preview carries the digest of what it shows"
    form = {"csrf_token": csrf_of(page), "digest": digest.group(1), **data}
    return client.post(f"/money/settlements/{quarter}", data=form)


def test_closing_needs_an_explicit_confirmation(conn, city, admin) -> None:  # noqa: ANN001
    last_quarter_sold(city)
    before = snapshot(conn)
    refused = close_form(admin, "2025Q4")
    assert refused.status_code == 400 and "请先勾选确认" in error_beside(text_of(refused), "confirm")
    assert snapshot(conn) == before


def test_closing_books_exactly_what_was_previewed(conn, city, admin) -> None:  # noqa: ANN001
    last_quarter_sold(city)
    preview = rows_of(text_of(admin.get("/money/settlements/2025Q4")), "statements")
    done = close_form(admin, "2025Q4", confirm="y")
    assert done.status_code == 302
    page = text_of(admin.get(done.headers["Location"]))
    assert "已结账" in page and "2025Q4 已结账：2 份结算单，应付合计 ¥33.88" in page
    assert rows_of(page, "statements") == preview
    doc = settlement_document(conn, "2025Q4")
    assert doc is not None and doc["totals"]["net_fen"] == 3388
    # a second close is harmless: the stored statements, nothing booked twice
    before = snapshot(conn)
    assert close_form_again(admin).status_code in (302, 400)
    assert snapshot(conn) == before


def close_form_again(client):  # noqa: ANN001, ANN201
    page = text_of(client.get("/money/settlements"))
    return client.post(
        "/money/settlements/2025Q4", data={"csrf_token": csrf_of(page), "confirm": "y", "digest": "x"}
    )


def test_a_sale_arriving_after_the_preview_stops_the_close(conn, city, admin) -> None:  # noqa: ANN001
    last_quarter_sold(city)
    page = text_of(admin.get("/money/settlements/2025Q4"))
    digest = re.search(r'value="([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
    # an offline sale of December reaches the server while the admin reads the preview
    assert city.sell("K003", 1200, DEC + 3_600_000, kind="meal", meal_period="lunch").status == "applied"
    before = snapshot(conn)
    refused = admin.post(
        "/money/settlements/2025Q4", data={"csrf_token": csrf_of(page), "digest": digest, "confirm": "y"}
    )
    html = text_of(refused)
    assert refused.status_code == 400 and "预览之后数据已有变化" in html
    assert snapshot(conn) == before
    assert "¥36.00" in html  # the new preview, with the late sale: ¥24 + ¥12 at C01
    assert close_form(admin, "2025Q4", confirm="y").status_code == 302


def test_terminals_behind_the_quarter_end_are_named_and_closing_then_needs_forcing(conn, city, admin) -> None:  # noqa: ANN001
    city.allocate("U01", "2025Q4")
    city.sell("K001", 1200, DEC, kind="meal", meal_period="lunch")
    city.report_watermark("C01", city.clock.now_ms())  # C02's terminal has not reported
    c02 = city.terminals["C02"].terminal_id
    html = text_of(admin.get("/money/settlements/2025Q4"))
    assert "1 台终端尚未上报至季末" in html and c02 in html
    before = snapshot(conn)
    refused = close_form(admin, "2025Q4", confirm="y")
    assert refused.status_code == 400 and "有终端尚未上报至期末" in error_beside(text_of(refused), "force")
    assert snapshot(conn) == before
    assert close_form(admin, "2025Q4", confirm="y", force="y").status_code == 302
    assert settlement_document(conn, "2025Q4")["forced"] is True  # type: ignore[index]


def test_a_quarter_not_yet_ended_or_out_of_order_is_explained(conn, city, admin) -> None:  # noqa: ANN001
    page = admin.get("/money/settlements/2026Q1")
    assert page.status_code == 409 and "该期间尚未结束" in text_of(page) and "确认结账" not in text_of(page)
    city.all_report(city.clock.now_ms())
    assert close_form(admin, "2025Q3", confirm="y").status_code == 302  # the first ever: any ended quarter
    skipped = admin.get("/money/settlements/2025Q1")
    assert skipped.status_code == 409 and "请按顺序结账" in text_of(skipped)
    listed = text_of(admin.get("/money/settlements"))
    assert "下一个结算季度：2025Q4" in listed and "2025Q3" in listed


def closed_quarter(city: MoneyWorld, admin) -> None:  # noqa: ANN001
    last_quarter_sold(city)
    with write_txn(city.conn):  # a payee's name as a spreadsheet formula: the files keep it text
        operators.set_operator(
            city.conn,
            OPERATOR,
            company_name='=HYPERLINK("http://x")',
            bank_name="工商银行",
            bank_account="6222000011112222",
        )
    assert close_form(admin, "2025Q4", confirm="y").status_code == 302


def test_statements_and_payout_list_download_as_csv_and_xlsx(conn, city, admin) -> None:  # noqa: ANN001
    closed_quarter(city, admin)
    doc = settlement_document(conn, "2025Q4")
    assert doc is not None
    csv_resp = admin.get("/money/settlements/2025Q4/statements?format=csv")
    assert csv_resp.mimetype == "text/csv" and csv_resp.get_data().startswith("\ufeff".encode())
    assert csv_resp.get_data(as_text=True) == statement_csv(doc)  # the API's own file

    ws = load_workbook(
        io.BytesIO(admin.get("/money/settlements/2025Q4/statements?format=xlsx").get_data())
    ).active
    header = [c.value for c in ws[1]]
    assert header[:6] == ["季度", "类型", "日期", "原属季度", "食堂编号", "食堂名称"]
    net_fen, net_yuan = header.index("应付金额(分)") + 1, header.index("应付金额") + 1
    lines = {ws.cell(row=r, column=5).value: r for r in range(2, ws.max_row + 1)}
    assert ws.cell(row=lines["C01"], column=net_fen).value == 2388
    yuan = ws.cell(row=lines["C01"], column=net_yuan)
    assert float(yuan.value) == 23.88 and "¥" in yuan.number_format  # a number shown in yuan

    payouts = admin.get("/money/settlements/2025Q4/payouts?format=csv").get_data(as_text=True)
    assert payouts.startswith("\ufeff收款人") and "'=HYPERLINK" in payouts  # formula-safe
    wb = load_workbook(
        io.BytesIO(admin.get("/money/settlements/2025Q4/payouts?format=xlsx").get_data())
    ).active
    company = next(
        c for row in wb.iter_rows(min_row=2) for c in row if c.value and "HYPERLINK" in str(c.value)
    )
    assert company.data_type == "s"  # text, never a formula
    amounts = [wb.cell(row=r, column=5).value for r in range(2, wb.max_row + 1)]
    assert sum(amounts) == doc["totals"]["net_fen"]


def test_an_operator_sees_only_their_own_canteens_statements(app, conn, clock, city, admin) -> None:  # noqa: ANN001
    closed_quarter(city, admin)
    operator = signed_in(app, conn, clock, "operator")  # runs C01, not C02
    html = text_of(operator.get("/money/settlements/2025Q4"))
    assert "财政局食堂" in html and "教育局食堂" not in html and "付款清单" not in html
    lines = (
        operator.get("/money/settlements/2025Q4/statements?format=csv").get_data(as_text=True).splitlines()
    )
    assert len(lines) == 2 and ",C01," in lines[1]
    assert operator.get("/money/settlements/2025Q4/payouts?format=csv").status_code == 403
    assert operator.get("/money/settlements/2026Q1").status_code == 404  # no preview for an operator


# --- year-end clearing ----------------------------------------------------------------------


def test_the_clearing_preview_shows_each_units_refund_and_where_it_goes(conn, city, admin) -> None:  # noqa: ANN001
    last_quarter_sold(city)  # U01: 2 × ¥300 − ¥24 − ¥10; U02: 2 × ¥240
    before = snapshot(conn)
    html = text_of(admin.get("/money/clearings?year=2025"))
    assert "预览（尚未清零）" in html and "退回原拨付单位" in html and "自费充值余额不清零" in html
    units = {r[0].split()[0]: r for r in rows_of(html, "clearing-units")}
    assert units["市财政局"][4] == "¥566.00" and units["市财政局"][6] == "refund:unit:U01"
    assert units["市教育局"][4] == "¥480.00" and units["市教育局"][5] == "市教育局"
    assert snapshot(conn) == before

    page = text_of(admin.get("/money/clearings?year=2025"))
    digest = re.search(r'value="([0-9a-f]{64})"', page).group(1)  # type: ignore[union-attr]
    no = admin.post("/money/clearings/2025", data={"csrf_token": csrf_of(page), "digest": digest})
    assert no.status_code == 400 and snapshot(conn) == before
    done = admin.post(
        "/money/clearings/2025", data={"csrf_token": csrf_of(page), "digest": digest, "confirm": "y"}
    )
    assert done.status_code == 302
    cleared = text_of(admin.get(done.headers["Location"]))
    assert "已清零" in cleared and "退回合计 ¥1046.00" in cleared
    csv_text = admin.get("/money/clearings?year=2025&format=csv").get_data(as_text=True)
    assert csv_text.startswith("\ufeff单位编号") and "refund:unit:U02" in csv_text
    ws = load_workbook(io.BytesIO(admin.get("/money/clearings?year=2025&format=xlsx").get_data())).active
    assert sum(ws.cell(row=r, column=6).value for r in range(2, ws.max_row + 1)) == 1046


def test_refunds_to_city_finance_are_shown_as_such(tmp_path, clock) -> None:  # noqa: ANN001
    app = create_app(
        {"HOME": str(tmp_path), "TESTING": True, "YEAR_END_REFUND_TO": "city_finance"}, clock=clock
    )
    conn = open_db(app.config["DATABASE"])
    city = MoneyWorld(conn, clock)
    last_quarter_sold(city)
    admin = signed_in(app, conn, clock, "admin")
    html = text_of(admin.get("/money/clearings?year=2025"))
    assert "退回市财政" in html and "refund:city_finance" in html
    conn.close()


def test_a_year_not_yet_ended_is_refused_with_its_reason(city, admin) -> None:  # noqa: ANN001
    page = admin.get("/money/clearings?year=2026")
    assert page.status_code == 409 and "该期间尚未结束" in text_of(page) and "确认清零" not in text_of(page)


# --- the rehearsal behind every preview -----------------------------------------------------


def test_a_rehearsal_returns_the_result_and_keeps_none_of_its_writes(conn, city) -> None:  # noqa: ANN001
    before = snapshot(conn)
    done = rehearse(conn, lambda: city.allocate("U01", "2026Q1"))
    assert done["total_fen"] == 60_000 and snapshot(conn) == before
    with pytest.raises(DomainError) as refused:
        rehearse(conn, lambda: (city.allocate("U02", "2026Q1"), city.allocate("U02", "2026Q1")))
    assert refused.value.code == "already_exists" and snapshot(conn) == before
    assert not conn.in_transaction


def test_the_digest_covers_figures_not_times() -> None:
    doc = {
        "quarter": "2026Q1",
        "closed_at_ms": 1,
        "forced": False,
        "statements": [{"net_fen": 5, "txn_id": 3}],
    }
    same = {**doc, "closed_at_ms": 2, "forced": True, "statements": [{"net_fen": 5, "txn_id": 9}]}
    other = {**doc, "statements": [{"net_fen": 6, "txn_id": 3}]}
    assert figures_digest(doc) == figures_digest(same) != figures_digest(other)


def test_the_settlement_page_collects_an_operators_debt_before_paying_it() -> None:
    from server.web.settle import decorate

    def statement(canteen: str, payee: str, net_fen: int) -> dict:
        return {"canteen_id": canteen, "payee": {"name": payee, "bank_account": "6222"}, "net_fen": net_fen,
                "warnings": [], "adjustments": []}  # fmt: skip

    doc = decorate(
        {
            "statements": [statement("C01", "甲公司", 300), statement("C02", "乙公司", 800)],
            "carried_fen": {"甲公司": -500, "乙公司": -100},  # negative statements of earlier quarters
        }
    )
    assert [(p["payee"]["name"], p["amount_fen"], p["carried_fen"]) for p in doc["payouts"]] == [
        ("乙公司", 700, -100)
    ]
    assert doc["payouts_total_fen"] == 700 and doc["owed_after"] == {"甲公司": -200}
