"""The registry's console pages through the Flask test client: imports by upload (preview
writes nothing; confirm applies exactly what was previewed, or nothing), the canteen's forms
(a refused change changes nothing and says why beside the field), cards and leavers on a
person's page (two administrators for a refund to a recently changed account), terminals
(provisioning shown once, revoking after a confirm). The same pages in a real browser:
tests/test_web_browser.py; every page × role: tests/test_web_roles.py."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import pytest

from server.downstream.deltas import current_version
from server.infra.db import write_txn
from server.registry import cards, funds, leavers
from server.registry import terminals as registry_terminals
from server.web import imports
from shared.errors import DomainError
from shared.money import format_fen
from shared.protocol import Status
from tests.helpers import populated
from tests.web_support import csrf_of, login, make_staff, post_form, text_of

FIXTURES = Path(__file__).parent / "fixtures" / "registry"
ROSTER_BAD = "".join(  # line 3 has no 工号
    f"{line}\n"
    for line in (
        "单位名称,姓名,工号,卡号",
        "市财政局,赵一,CZ101,04AA000001",
        "市财政局,钱二,,04AA000002",
        "市财政局,孙三,CZ103,04AA000003",
    )
)
ROSTER_GOOD = ROSTER_BAD.replace("钱二,,", "钱二,CZ102,")
BANK = "6217003320001234567"


@pytest.fixture
def world(conn, clock):  # noqa: ANN001, ANN201
    w = populated(conn, clock.now_ms())
    for role in ("admin", "clerk", "auditor"):
        make_staff(conn, role, clock.now_ms())
    return w


@pytest.fixture
def admin(app, world):  # noqa: ANN001, ANN201
    client = app.test_client()
    assert login(client, "admin1").status_code == 302
    return client


@pytest.fixture
def clerk(app, world):  # noqa: ANN001, ANN201
    client = app.test_client()  # of U01 (市财政局)
    assert login(client, "clerk1").status_code == 302
    return client


def signed_in(app, conn, clock, username: str, role: str = "admin"):  # noqa: ANN001, ANN201
    make_staff(conn, role, clock.now_ms(), username)
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def upload(client, url: str, text: str | bytes, page: str | None = None, **fields: str):  # noqa: ANN001, ANN201
    data = text.encode("utf-8") if isinstance(text, str) else text
    token = csrf_of(text_of(client.get(page or url)))
    body = {"csrf_token": token, "file": (io.BytesIO(data), "名单.csv"), **fields}
    return client.post(url, data=body, content_type="multipart/form-data")


def digest_of(html: str) -> str:
    m = re.search(r'name="digest"[^>]*value="([0-9a-f]{64})"', html) or re.search(
        r'value="([0-9a-f]{64})"[^>]*name="digest"', html
    )
    assert m, "the preview has no confirm form"
    return m.group(1)


def snapshot(conn: sqlite3.Connection) -> tuple:
    """What an import may change: people, cards, canteens, units, deltas."""
    return (
        conn.execute("SELECT count(*), group_concat(name) FROM holders").fetchone()[:],
        conn.execute("SELECT count(*), group_concat(status) FROM cards").fetchone()[:],
        conn.execute("SELECT count(*), group_concat(config_json) FROM canteens").fetchone()[:],
        conn.execute("SELECT count(*) FROM units").fetchone()[0],
        current_version(conn),
    )


def error_beside(html: str, field_id: str) -> str:
    m = re.search(rf'<p class="error" id="{field_id}-error">(.*?)</p>', html, re.S)
    assert m, f"no error beside {field_id}"
    return m.group(1)


# --- the staff roster: preview, confirm ----------------------------------------------------


def test_a_roster_with_a_bad_line_is_shown_by_line_and_nothing_is_kept_or_applied(clerk, conn) -> None:  # noqa: ANN001
    before = snapshot(conn)
    page = upload(clerk, "/roster/import", ROSTER_BAD)
    html = text_of(page)
    assert page.status_code == 400
    assert "第 3 行" in html and "工号为空" in html and "未导入任何数据" in html
    assert snapshot(conn) == before
    assert conn.execute("SELECT count(*) FROM web_uploads").fetchone()[0] == 0
    assert "确认导入" not in html  # nothing to confirm


def test_the_fixed_roster_is_previewed_without_writing_then_confirmed_once(clerk, conn) -> None:  # noqa: ANN001
    upload(clerk, "/roster/import", ROSTER_BAD)
    before = snapshot(conn)
    preview = upload(clerk, "/roster/import", ROSTER_GOOD)
    html = text_of(preview)
    assert preview.status_code == 200
    assert "新增人员 3 人" in html and "钱二" in html and "CZ102" in html and "04AA000002" in html
    assert snapshot(conn) == before  # the preview wrote nothing (but the kept file)
    assert conn.execute("SELECT count(*) FROM web_uploads").fetchone()[0] == 1

    done = post_form(clerk, "/roster/import/confirm", {"digest": digest_of(html)}, page="/roster/import")
    assert done.status_code == 302 and done.headers["Location"].endswith("/people")
    assert "名单已导入：新增人员 3 人" in text_of(clerk.get("/people"))
    rows = conn.execute(
        "SELECT name, unit_id FROM holders WHERE staff_no LIKE 'CZ1%' ORDER BY staff_no"
    ).fetchall()
    assert [tuple(r) for r in rows] == [("赵一", "U01"), ("钱二", "U01"), ("孙三", "U01")]
    assert conn.execute("SELECT count(*) FROM web_uploads").fetchone()[0] == 0
    after = snapshot(conn)

    again = post_form(clerk, "/roster/import/confirm", {"digest": digest_of(html)}, page="/roster/import")
    assert again.status_code == 400 and "上传的文件已失效" in text_of(again)
    assert snapshot(conn) == after  # a second confirm (a reload) applies nothing
    found = text_of(clerk.get("/people?q=钱二"))
    assert "CZ102" in found and "共 1 条" in found


def test_a_confirm_after_the_data_changed_applies_nothing_and_shows_the_new_preview(
    clerk,
    conn,
    clock,  # noqa: ANN001
) -> None:
    html = text_of(upload(clerk, "/roster/import", ROSTER_GOOD))
    digest = digest_of(html)
    with write_txn(conn):  # meanwhile, 孙三's new card is given to someone else (a lost card's replacement)
        cards.replace(conn, "C00001", "04AA000003", clock.now_ms())
    before = snapshot(conn)
    page = post_form(clerk, "/roster/import/confirm", {"digest": digest}, page="/roster/import")
    html = text_of(page)
    assert page.status_code == 400
    assert (
        "预览之后数据已有变化" in html
        and "第 4 行" in html
        and "卡号 04AA000003 已属于本单位工号 U01-0001" in html
    )
    assert snapshot(conn) == before
    assert conn.execute("SELECT count(*) FROM web_uploads").fetchone()[0] == 0


def test_a_changed_preview_is_shown_to_confirm_again(clerk, conn, clock) -> None:  # noqa: ANN001
    digest = digest_of(text_of(upload(clerk, "/roster/import", ROSTER_GOOD)))
    with write_txn(conn):  # meanwhile a person is added: the new people's ids move on
        conn.execute(
            "INSERT INTO holders(id, unit_id, name, staff_no) VALUES ('H000007', 'U01', '周七', 'CZ900')"
        )
    before = snapshot(conn)
    page = post_form(clerk, "/roster/import/confirm", {"digest": digest}, page="/roster/import")
    assert page.status_code == 400 and "请核对下面新的预览" in text_of(page)
    assert snapshot(conn) == before
    done = post_form(
        clerk, "/roster/import/confirm", {"digest": digest_of(text_of(page))}, page="/roster/import"
    )
    assert done.status_code == 302
    assert conn.execute("SELECT count(*) FROM holders WHERE staff_no LIKE 'CZ1%'").fetchone()[0] == 3


def test_a_clerk_imports_only_their_own_unit_and_cannot_confirm_anothers_upload(
    app,
    clerk,
    admin,
    conn,
    clock,  # noqa: ANN001
) -> None:
    page = upload(clerk, "/roster/import", ROSTER_GOOD.replace("市财政局,孙三", "市教育局,孙三"))
    assert page.status_code == 400 and "第 4 行" in text_of(page) and "不是本单位" in text_of(page)
    digest = digest_of(text_of(upload(clerk, "/roster/import", ROSTER_GOOD)))
    before = snapshot(conn)
    stolen = post_form(admin, "/roster/import/confirm", {"digest": digest}, page="/roster/import")
    assert stolen.status_code == 400 and "上传的文件已失效" in text_of(stolen)
    assert snapshot(conn) == before


def test_only_the_latest_upload_can_be_confirmed(clerk, conn) -> None:  # noqa: ANN001
    first = digest_of(text_of(upload(clerk, "/roster/import", ROSTER_GOOD)))
    second = digest_of(text_of(upload(clerk, "/roster/import", ROSTER_GOOD.replace("孙三", "孙叁"))))
    assert first != second
    before = snapshot(conn)
    old = post_form(clerk, "/roster/import/confirm", {"digest": first}, page="/roster/import")
    assert old.status_code == 400 and "上传的文件已失效" in text_of(old)
    assert snapshot(conn) == before
    assert (
        post_form(clerk, "/roster/import/confirm", {"digest": second}, page="/roster/import").status_code
        == 302
    )
    assert conn.execute("SELECT name FROM holders WHERE staff_no = 'CZ103'").fetchone()[0] == "孙叁"


def test_a_file_that_is_no_text_is_refused_beside_the_file_field(clerk, conn) -> None:  # noqa: ANN001
    page = upload(clerk, "/roster/import", b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x81\x00")
    assert page.status_code == 400
    assert "另存为" in error_beside(text_of(page), "file")
    empty = upload(clerk, "/roster/import", b"")
    assert empty.status_code == 400 and "文件是空的" in error_beside(text_of(empty), "file")


def test_a_preview_cannot_write_even_if_the_importer_tried(conn, clock, world) -> None:  # noqa: ANN001
    def writes(c: sqlite3.Connection, text: str, now: int, dry_run: bool, options: dict) -> dict:
        c.execute("UPDATE units SET name = 'x' WHERE id = 'U01'")
        return {"rows": 1}

    account = conn.execute("SELECT id FROM web_accounts WHERE login = 'admin1'").fetchone()[0]
    out = imports.preview(imports.Importer("roster", writes), conn, account, b"a", "a", clock.now_ms())
    assert out.report == {"rows": 1}
    assert conn.execute("SELECT name FROM units WHERE id = 'U01'").fetchone()[0] == "市财政局"


# --- the attachment table --------------------------------------------------------------------


def test_the_attachment_table_is_previewed_then_imported(admin, conn) -> None:  # noqa: ANN001
    data = (FIXTURES / "canteens_seed_bom.csv").read_bytes()
    with write_txn(conn):
        conn.execute(
            "INSERT INTO units(id, name, quarterly_standard_fen) VALUES ('U04', '市人民医院', 36000)"
        )
        conn.execute("UPDATE canteens SET name = '市财政局食堂' WHERE id = 'C01'")  # the file's name for it
    before = snapshot(conn)
    page = upload(admin, "/canteens/import", data)
    html = text_of(page)
    assert page.status_code == 200
    assert "新增食堂 3 个，变更 1 个" in html
    assert "市人民医院食堂（住院部三楼）" in html and "中餐价格：— → ¥10.50" in html
    c01 = html.split("<td>市财政局食堂</td>")[1].split("</tr>")[0]
    assert "变更" in c01 and "地点：— → 市财经大楼1楼" in c01 and "就餐面积（平方米）：— → 350<" in c01
    assert "价格" not in c01  # its prices are those stored: only what changes is shown
    assert snapshot(conn) == before
    done = post_form(admin, "/canteens/import/confirm", {"digest": digest_of(html)}, page="/canteens/import")
    assert done.status_code == 302
    names = {r[0] for r in conn.execute("SELECT name FROM canteens")}
    assert {"市教育局食堂", "市人民医院食堂（门诊楼负一楼）", "市人民医院食堂（住院部三楼）"} <= names
    assert current_version(conn) > before[-1]  # the terminals get the new canteens
    lunch = json.loads(
        conn.execute("SELECT config_json FROM canteens WHERE name = '市教育局食堂'").fetchone()[0]
    )
    assert lunch["meals"]["lunch"]["price_fen"] == 1050


def test_an_attachment_table_with_errors_and_unknown_units(admin, conn) -> None:  # noqa: ANN001
    page = upload(admin, "/canteens/import", (FIXTURES / "canteens_errors.csv").read_bytes())
    assert page.status_code == 400 and "未导入任何数据" in text_of(page)
    assert re.search(r"第 \d+ 行", text_of(page))
    unknown = "单位名称,中餐\n市统计局,11\n"
    refused = upload(admin, "/canteens/import", unknown)
    assert refused.status_code == 400 and "单位“市统计局”未登记" in text_of(refused)
    before = snapshot(conn)
    preview = upload(admin, "/canteens/import", unknown, create_units="y")
    assert "将新登记单位：市统计局" in text_of(preview) and snapshot(conn) == before
    done = post_form(
        admin, "/canteens/import/confirm", {"digest": digest_of(text_of(preview))}, page="/canteens/import"
    )
    assert done.status_code == 302  # the option was kept with the file
    assert conn.execute("SELECT count(*) FROM canteens WHERE name = '市统计局食堂'").fetchone()[0] == 1


# --- a canteen's forms -------------------------------------------------------------------------


def canteen_config(conn: sqlite3.Connection, canteen_id: str = "C01") -> dict:
    return json.loads(
        conn.execute("SELECT config_json FROM canteens WHERE id = ?", (canteen_id,)).fetchone()[0]
    )


def test_a_shop_price_above_its_reference_is_refused_beside_the_price(admin, conn) -> None:  # noqa: ANN001
    before = (canteen_config(conn), current_version(conn))
    item = {"item_sku": "tissue", "item_name": "抽纸", "item_price": "4.50", "item_reference": "4.00"}
    page = post_form(admin, "/canteens/C01/items", item, page="/canteens/C01")
    assert page.status_code == 400
    assert "售价高于市场参考价" in error_beside(text_of(page), "item_price")
    assert (canteen_config(conn), current_version(conn)) == before
    ok = post_form(admin, "/canteens/C01/items", {**item, "item_price": "3.80"}, page="/canteens/C01")
    assert ok.status_code == 302
    assert canteen_config(conn)["items"]["tissue"]["price_fen"] == 380 and current_version(conn) > before[1]
    bad = post_form(admin, "/canteens/C01/items", {**item, "item_price": "3.805"}, page="/canteens/C01")
    assert bad.status_code == 400 and "最多两位小数" in error_beside(text_of(bad), "item_price")


def test_meal_times_and_prices(admin, conn) -> None:  # noqa: ANN001
    before = canteen_config(conn)
    meals = {
        "breakfast_served": "y",
        "breakfast_start": "07:00",
        "breakfast_end": "09:00",
        "breakfast_price": "5",
        "lunch_served": "y",
        "lunch_start": "13:30",
        "lunch_end": "11:30",
        "lunch_price": "12",
        "lunch_visitor": "15",
    }
    page = post_form(admin, "/canteens/C01/meals", meals, page="/canteens/C01")
    assert page.status_code == 400 and "13:30 is not before end" in error_beside(text_of(page), "lunch_end")
    assert canteen_config(conn) == before
    page = post_form(admin, "/canteens/C01/meals", {**meals, "lunch_start": "11点"}, page="/canteens/C01")
    assert "时间格式应为" in error_beside(text_of(page), "lunch_start")
    page = post_form(admin, "/canteens/C01/meals", {**meals, "lunch_start": "08:30"}, page="/canteens/C01")
    assert page.status_code == 400 and "overlap" in text_of(page)  # breakfast until 09:00
    assert canteen_config(conn) == before
    ok = post_form(
        admin,
        "/canteens/C01/meals",
        {**meals, "lunch_start": "11:00", "lunch_end": "13:00"},
        page="/canteens/C01",
    )
    assert ok.status_code == 302
    got = canteen_config(conn)["meals"]
    assert set(got) == {"breakfast", "lunch"}  # dinner unticked: no longer served
    assert got["lunch"] == {"start": "11:00", "end": "13:00", "price_fen": 1200, "visitor_price_fen": 1500}
    assert "¥15.00" in text_of(admin.get("/canteens/C01"))


def test_quality_bands_and_details(admin, conn) -> None:  # noqa: ANN001
    page = post_form(admin, "/canteens/C01/bands", {"bands": "90 100\n80 九十"}, page="/canteens/C01")
    assert page.status_code == 400 and "第 2 行" in error_beside(text_of(page), "bands")
    page = post_form(admin, "/canteens/C01/bands", {"bands": "90 100\n80 98"}, page="/canteens/C01")
    assert page.status_code == 400 and "score 0" in error_beside(text_of(page), "bands")
    assert conn.execute("SELECT count(*) FROM quality_bands").fetchone()[0] == 0
    ok = post_form(admin, "/canteens/C01/bands", {"bands": "90 100\n80 98\n0 95"}, page="/canteens/C01")
    assert ok.status_code == 302 and "80 分及以上：支付 98%" in text_of(admin.get("/canteens/C01"))

    taken = post_form(
        admin, "/canteens/C01/details", {"name": "教育局食堂", "seats": "200"}, page="/canteens/C01"
    )
    assert taken.status_code == 400 and "记录已存在" in error_beside(text_of(taken), "name")
    assert conn.execute("SELECT name FROM canteens WHERE id = 'C01'").fetchone()[0] == "财政局食堂"
    ok = post_form(
        admin,
        "/canteens/C01/details",
        {"name": "财政局食堂", "seats": "220", "location": "1楼"},
        page="/canteens/C01",
    )
    assert ok.status_code == 302
    row = conn.execute("SELECT seats, location, operator FROM canteens WHERE id = 'C01'").fetchone()
    assert tuple(row) == (220, "1楼", "")


def test_units_are_added_and_changed_with_reasons_beside_the_fields(admin, conn) -> None:  # noqa: ANN001
    bad = post_form(admin, "/units", {"name": "市统计局", "quarterly_standard": "三百"}, page="/units")
    assert bad.status_code == 400 and "金额格式有误" in error_beside(text_of(bad), "quarterly_standard")
    taken = post_form(admin, "/units", {"name": "市财政局", "quarterly_standard": "300"}, page="/units")
    assert taken.status_code == 400 and "记录已存在" in text_of(taken)
    assert conn.execute("SELECT count(*) FROM units").fetchone()[0] == 3
    ok = post_form(admin, "/units", {"name": "市统计局", "quarterly_standard": "280.50"}, page="/units")
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/units/U0004")
    assert tuple(
        conn.execute("SELECT name, quarterly_standard_fen FROM units WHERE id = 'U0004'").fetchone()
    ) == (
        "市统计局",
        28050,
    )
    changed = post_form(
        admin, "/units/U01", {"name": "市财政局", "quarterly_standard": "320"}, page="/units/U01"
    )
    assert changed.status_code == 302
    assert conn.execute("SELECT quarterly_standard_fen FROM units WHERE id = 'U01'").fetchone()[0] == 32000


def test_the_auditor_reads_the_registry_pages_without_a_form(app, conn, clock, world) -> None:  # noqa: ANN001
    auditor = app.test_client()
    login(auditor, "auditor1")
    for url in ("/units", "/units/U01", "/canteens", "/canteens/C01", "/refunds"):
        page = auditor.get(url)
        assert page.status_code == 200, url
        assert '<button type="submit">保存' not in text_of(page) and "添加</button>" not in text_of(page)


# --- cards and leavers ------------------------------------------------------------------------


def card_status(conn: sqlite3.Connection, card_id: str) -> str | None:
    row = conn.execute("SELECT status FROM cards WHERE card_id = ?", (card_id,)).fetchone()
    return row[0] if row else None


def test_a_card_is_reported_lost_and_replaced_from_the_persons_page(clerk, conn) -> None:  # noqa: ANN001
    version = current_version(conn)
    lost = post_form(clerk, "/people/H00001/cards/C00001/lost", {}, page="/people/H00001")
    assert lost.status_code == 302 and card_status(conn, "C00001") == "lost"
    assert current_version(conn) > version  # the terminals are told at once
    assert "已挂失" in text_of(clerk.get("/people/H00001"))

    taken = post_form(
        clerk,
        "/people/H00001/replace",
        {"old_card": "C00001", "new_card_id": "C00004"},
        page="/people/H00001",
    )
    assert taken.status_code == 400 and "记录已存在" in error_beside(text_of(taken), "new_card_id")
    assert card_status(conn, "C00004") == "active" and card_status(conn, "C00001") == "lost"
    ok = post_form(
        clerk,
        "/people/H00001/replace",
        {"old_card": "C00001", "new_card_id": "04BB000001"},
        page="/people/H00001",
    )
    assert ok.status_code == 302
    assert card_status(conn, "04BB000001") == "active"
    assert conn.execute("SELECT holder_id FROM cards WHERE card_id = '04BB000001'").fetchone()[0] == "H00001"


def test_a_clerk_cannot_touch_another_units_cards(clerk, conn) -> None:  # noqa: ANN001
    token = csrf_of(text_of(clerk.get("/people")))
    assert clerk.post("/people/H00002/cards/C00002/lost", data={"csrf_token": token}).status_code == 403
    assert clerk.post("/people/H00001/cards/C00002/lost", data={"csrf_token": token}).status_code == 403
    assert card_status(conn, "C00002") == "active"


def test_leaving_needs_the_confirmation_and_returns_the_subsidy(clerk, conn) -> None:  # noqa: ANN001
    page = clerk.get("/people/H00001/leave")
    assert "¥300.00" in text_of(page) and "立即退回市财政局" in text_of(page)
    refused = post_form(clerk, "/people/H00001/leave", {}, page="/people/H00001/leave")
    assert refused.status_code == 400 and "请勾选确认" in error_beside(text_of(refused), "confirm")
    assert conn.execute("SELECT status FROM holders WHERE id = 'H00001'").fetchone()[0] == "active"
    done = post_form(clerk, "/people/H00001/leave", {"confirm": "y"}, page="/people/H00001/leave")
    assert done.status_code == 302
    assert conn.execute("SELECT status FROM holders WHERE id = 'H00001'").fetchone()[0] == "left"
    assert card_status(conn, "C00001") == "retired"
    assert "就餐经费 ¥300.00 已退回单位" in text_of(clerk.get("/people/H00001"))


def test_a_refund_to_a_recently_changed_account_needs_two_other_administrators(
    app,
    clerk,
    conn,
    clock,  # noqa: ANN001
) -> None:
    wang = signed_in(app, conn, clock, "wang")
    li = signed_in(app, conn, clock, "li")
    zhao = signed_in(app, conn, clock, "zhao")
    with write_txn(conn):
        funds.topup(conn, "C00001", 4_200, clock.now_ms(), ref="refund-test")
    bad = post_form(wang, "/people/H00001/bank-account", {"bank_account": "6217-12"}, page="/people/H00001")
    assert bad.status_code == 400 and "不是银行账号" in error_beside(text_of(bad), "bank_account")
    ok = post_form(wang, "/people/H00001/bank-account", {"bank_account": BANK}, page="/people/H00001")
    assert ok.status_code == 302 and "6217 **** 4567" in text_of(wang.get("/people/H00001"))
    early = post_form(clerk, "/people/H00001/refund", {}, page="/people/H00001")
    assert early.status_code == 400 and "在职人员不能退款" in error_beside(
        text_of(early), "refund_bank_account"
    )
    assert conn.execute("SELECT count(*) FROM refund_requests").fetchone()[0] == 0
    post_form(clerk, "/people/H00001/leave", {"confirm": "y"}, page="/people/H00001/leave")
    asked = post_form(clerk, "/people/H00001/refund", {}, page="/people/H00001")
    assert asked.status_code == 302
    request_id = int(asked.headers["Location"].rsplit("/", 1)[1])

    def self_purse() -> int:
        return conn.execute("SELECT balance_fen FROM accounts WHERE id = 'holder:H00001:self'").fetchone()[0]

    held = self_purse()
    assert held >= 4_200
    page = text_of(wang.get(f"/refunds/{request_id}"))
    assert "须两位管理员分别批准" in page and "6217 **** 4567" in page and format_fen(held) in page

    refused = post_form(wang, f"/refunds/{request_id}/approve", {}, page=f"/refunds/{request_id}")
    assert refused.status_code == 409 and "需另一位管理员复核" in text_of(refused)  # wang changed the account
    assert self_purse() == held
    first = post_form(li, f"/refunds/{request_id}/approve", {}, page=f"/refunds/{request_id}")
    assert first.status_code == 302 and self_purse() == held  # recorded, nothing paid
    twice = post_form(li, f"/refunds/{request_id}/approve", {}, page=f"/refunds/{request_id}")
    assert twice.status_code == 409 and self_purse() == held
    paid = post_form(zhao, f"/refunds/{request_id}/approve", {}, page=f"/refunds/{request_id}")
    assert paid.status_code == 302 and self_purse() == 0
    page = text_of(zhao.get(f"/refunds/{request_id}"))
    assert "已退款" in page and format_fen(held) in page and "[测试admin]#web:staff:li" in page
    assert leavers.get_request(conn, request_id)["status"] == "approved"


def test_the_clerk_sees_only_their_units_refund_requests(app, clerk, conn, clock) -> None:  # noqa: ANN001
    with write_txn(conn):
        funds.topup(conn, "C00002", 1_000, clock.now_ms(), ref="u02")
        leavers.leave(conn, "H00002", clock.now_ms())
        req = leavers.request_refund(conn, "H00002", clock.now_ms(), "test", bank_account=BANK)
    assert clerk.get(f"/refunds/{req['id']}").status_code == 403
    assert "没有符合条件的记录" in text_of(clerk.get("/refunds"))
    token = csrf_of(text_of(clerk.get("/refunds")))
    assert clerk.post(f"/refunds/{req['id']}/approve", data={"csrf_token": token}).status_code == 403


# --- terminals ------------------------------------------------------------------------------


def _provision_form(admin) -> tuple[str, dict[str, str]]:  # noqa: ANN001
    form = text_of(admin.get("/terminals/new"))
    nonce = re.search(r'name="nonce"[^>]*value="([0-9a-f]+)"', form) or re.search(
        r'value="([0-9a-f]+)"[^>]*name="nonce"', form
    )
    assert nonce
    return form, {"csrf_token": csrf_of(form), "nonce": nonce.group(1)}


def test_provisioning_issues_a_one_time_code_and_the_secret_reaches_no_page(admin, app, conn) -> None:  # noqa: ANN001
    form, fields = _provision_form(admin)
    assert 'value="mqtt://127.0.0.1:1883"' in form  # the terminal's broker, prefilled
    data = {**fields, "canteen_id": "C01", "terminal_id": "T-code-1", "method": "code",
            "broker_url": "mqtt://10.0.0.5:1883"}  # fmt: skip
    page = admin.post("/terminals/new", data=data)
    html = text_of(page)
    code = re.search(r"\b([0-9A-Z]{4}(?:-[0-9A-Z]{4}){3})\b", html)
    assert page.status_code == 200 and code and "只显示这一次" in html
    assert page.headers["Cache-Control"] == "no-store"
    assert f"canteen-terminal enrol --server https://服务器地址 {code.group(1)}" in html
    # nothing registered yet: the code reserves the id; the broker is not told before enrolment
    assert conn.execute("SELECT count(*) FROM terminals").fetchone()[0] == 0
    waiting = text_of(admin.get("/terminals"))
    assert "等待注册的终端" in waiting and "T-code-1" in waiting and code.group(1) not in waiting

    redeemed = app.test_client().post("/api/v1/enrol", json={"code": code.group(1)})
    assert redeemed.status_code == 200, redeemed.get_json()
    config = redeemed.get_json()
    assert (config["terminal_id"], config["broker_url"]) == ("T-code-1", "mqtt://10.0.0.5:1883")
    assert config["secret_hex"] not in text_of(admin.get("/terminals")) + text_of(
        admin.get("/terminals/T-code-1")
    )
    assert "等待注册的终端" not in text_of(admin.get("/terminals"))

    again = admin.post("/terminals/new", data=data)  # the browser re-posts on a reload
    assert again.status_code == 400 and "此表单已提交过" in text_of(again)
    _, fields = _provision_form(admin)
    taken = admin.post("/terminals/new", data={**data, **fields})
    assert taken.status_code == 400 and "记录已存在" in error_beside(text_of(taken), "terminal_id")


def test_a_broker_address_with_a_password_or_no_scheme_is_refused_on_the_form(admin, conn) -> None:  # noqa: ANN001
    for url, words in (
        ("mqtt://server:pw@10.0.0.5:1883", "不要写用户名和密码"),
        ("http://x", "消息服务器地址无效"),
    ):
        _, fields = _provision_form(admin)
        page = admin.post(
            "/terminals/new", data={**fields, "canteen_id": "C01", "method": "code", "broker_url": url}
        )
        assert page.status_code == 400 and words in error_beside(text_of(page), "broker_url")
    assert conn.execute("SELECT count(*) FROM enrolments").fetchone()[0] == 0


def test_provisioning_with_the_secret_shows_the_configuration_once(admin, app, conn) -> None:  # noqa: ANN001
    _, fields = _provision_form(admin)
    data = {**fields, "canteen_id": "C01", "terminal_id": "T-web-1", "method": "secret",
            "broker_url": "mqtt://127.0.0.1:1883"}  # fmt: skip
    page = admin.post("/terminals/new", data=data)
    html = text_of(page)
    secret = conn.execute("SELECT secret_hex FROM terminals WHERE id = 'T-web-1'").fetchone()[0]
    assert page.status_code == 200 and secret in html and "只显示这一次" in html
    assert "broker_url" in html and "mqtt://127.0.0.1:1883" in html
    assert page.headers["Cache-Control"] == "no-store"
    assert "T-web-1" in Path(app.config["MQTT_PASSWORD_FILE"]).read_text()  # the broker may let it in
    again = admin.post("/terminals/new", data=data)  # the browser re-posts on a reload
    assert again.status_code == 400 and "此表单已提交过" in text_of(again)
    assert conn.execute("SELECT count(*) FROM terminals").fetchone()[0] == 1
    assert secret not in text_of(admin.get("/terminals")) + text_of(admin.get("/terminals/T-web-1"))

    _, fields = _provision_form(admin)
    taken = admin.post("/terminals/new", data={**data, **fields})
    assert taken.status_code == 400 and "记录已存在" in error_beside(text_of(taken), "terminal_id")


def test_the_fleet_shows_what_the_server_knows_and_a_terminal_is_revoked_after_a_confirm(
    admin,
    app,
    conn,
    clock,  # noqa: ANN001
) -> None:
    with write_txn(conn):
        a = registry_terminals.provision(conn, "C01", clock.now_ms(), "00" * 32, "T-a")
        registry_terminals.provision(conn, "C02", clock.now_ms(), "00" * 32, "T-b")
        status = Status(state="online", pending=3, clock_offset_ms=-1500, clock_ms=clock.now_ms())
        registry_terminals.record_status(conn, a.terminal_id, status, clock.now_ms())
    fleet = text_of(admin.get("/terminals"))
    row_a = fleet.split("T-a</a>")[1].split("</tr>")[0]
    row_b = fleet.split("T-b</a>")[1].split("</tr>")[0]
    assert "在线" in row_a and re.search(r">\s*3</td>", row_a) and "-1.5 秒" in row_a
    assert "从未连接" in row_b
    clock.advance_ms(120_000)
    assert "离线" in text_of(admin.get("/terminals")).split("T-a</a>")[1].split("</tr>")[0]

    refused = post_form(admin, "/terminals/T-a", {}, page="/terminals/T-a")
    assert refused.status_code == 400 and "请勾选确认" in error_beside(text_of(refused), "confirm")
    assert registry_terminals.revoked_at(conn, "T-a") is None
    done = post_form(admin, "/terminals/T-a", {"confirm": "y"}, page="/terminals/T-a")
    assert done.status_code == 302
    assert registry_terminals.revoked_at(conn, "T-a") == clock.now_ms()
    assert "T-a" not in Path(app.config["MQTT_PASSWORD_FILE"]).read_text()
    assert "已停用" in text_of(admin.get("/terminals")).split("T-a</a>")[1].split("</tr>")[0]
    assert "停用终端 T-a" not in text_of(admin.get("/terminals/T-a"))  # nothing more to do
    with pytest.raises(DomainError):
        with write_txn(conn):
            registry_terminals.revoke(conn, "T-a", clock.now_ms())
    assert admin.get("/terminals/T-none").status_code == 404


def test_the_update_page_shows_bundles_offers_and_each_terminals_last_report(admin, conn, clock) -> None:  # noqa: ANN001
    from server.registry import updates
    from shared.protocol import UpdateReport

    now = clock.now_ms()
    with write_txn(conn):
        for tid in ("T-u1", "T-u2"):
            registry_terminals.provision(conn, "C01", now, "00" * 32, tid)
        conn.execute(  # a held bundle, as add_bundle keeps it after checking its signature
            "INSERT INTO update_bundles(kind, version, min_version, sha256, size, file_name, created_at_ms, "
            "added_at_ms) VALUES ('terminal', '9.0', '1.0', ?, 20480, 'terminal-9.0.bundle', ?, ?)",
            ("ab" * 32, now, now),
        )
        updates.offer(conn, "terminal", "9.0", "C01", 100, now)
        report = UpdateReport("terminal", "9.0", "rolled_back", "1.0", "update_rolled_back", "no server")
        updates.record_report(conn, "T-u2", "m1", report, now, now)
    page = text_of(admin.get("/updates"))
    bundles = page.split('id="bundles"')[1].split("</table>")[0]
    assert "终端软件" in bundles and "9.0" in bundles and "C01 100%" in bundles and "20.0 KB" in bundles
    rows = page.split('id="rollout"')[1].split("</table>")[0]
    u1 = rows.split("T-u1</a>")[1].split("</tr>")[0]
    u2 = rows.split("T-u2</a>")[1].split("</tr>")[0]
    assert "终端软件 9.0" in u1 and "—" in u1  # offered, nothing reported yet
    assert "已回退" in u2 and "update_rolled_back" in u2
    assert "1 台终端的更新拒绝、失败或已回退" in page
    assert "软件更新" in text_of(admin.get("/terminals"))  # in the admin's menu
