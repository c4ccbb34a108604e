"""The registry's console pages in a real browser (Playwright driving Debian's Chromium against
a real server with a broker and a terminal; the browser, the server and the checks are those of
tests/test_web_browser.py).

Journeys: a unit's clerk uploads a roster with one bad line, sees the error by its line, fixes
the file, confirms the preview and finds the new person; the admin reports a card lost from the
person's page and the terminal declines that card, then issues a replacement that pays with the
same purses. Every registry page passes axe-core's checks and fits a 360 px wide phone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.infra.db import write_txn
from server.registry import funds, leavers
from shared.clock import SystemClock
from terminal.authorize import TapRequest
from tests.test_web_browser import (  # the same browser, server and checks as the other journeys
    Site,
    browser_context_args,  # noqa: F401  # fixtures: the same Chromium, locale and time zone
    browser_type_launch_args,  # noqa: F401
    check_page,
    log_in,
    site,  # noqa: F401
)

pytestmark = [pytest.mark.broker, pytest.mark.browser, pytest.mark.slow]

ROSTER = [
    "单位名称,姓名,工号,卡号",
    "市财政局,赵一,WEB101,04CC000001",
    "市财政局,钱二,,04CC000002",
    "市财政局,孙三,WEB103,04CC000003",
]


def open_details(page) -> None:  # noqa: ANN001
    """Open every folded form, so the checks see the fields too."""
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")


def test_a_clerk_imports_a_roster_fixing_one_bad_line(page, site: Site, tmp_path: Path) -> None:  # noqa: ANN001, F811
    bad, good = tmp_path / "名单.csv", tmp_path / "名单-改正.csv"
    bad.write_text("\n".join(ROSTER) + "\n", encoding="utf-8-sig")
    good.write_text("\n".join(ROSTER).replace("钱二,,", "钱二,WEB102,") + "\n", encoding="utf-8-sig")
    site.staff("clerk", "rosterweb")  # of U01, 市财政局
    log_in(page, site, "rosterweb")
    page.wait_for_url("**/people")
    page.get_by_role("link", name="导入人员名单").click()
    check_page(page, "roster-import")

    page.get_by_label("CSV 文件").set_input_files(str(bad))
    page.get_by_role("button", name="上传并预览").click()
    errors = page.locator("#line-errors").inner_text()
    assert "第 3 行" in errors and "工号为空" in errors
    assert page.get_by_role("button", name="确认导入").count() == 0
    check_page(page, "roster-import-errors")

    page.get_by_label("CSV 文件").set_input_files(str(good))
    page.get_by_role("button", name="上传并预览").click()
    assert "新增人员 3 人" in page.locator("#preview-summary").inner_text()
    assert "钱二" in page.locator("#preview-table").inner_text()
    check_page(page, "roster-import-preview")
    conn = site.db()
    assert conn.execute("SELECT count(*) FROM holders WHERE staff_no LIKE 'WEB1%'").fetchone()[0] == 0
    conn.close()

    page.get_by_role("button", name="确认导入").click()
    page.wait_for_url("**/people")
    assert "名单已导入" in page.locator(".flash").inner_text()
    page.get_by_label("姓名、工号或卡号").fill("WEB102")
    page.get_by_role("button", name="搜索").click()
    page.get_by_role("link", name="钱二").first.click()
    assert "04CC000002" in page.locator("#cards-table").inner_text()
    check_page(page, "roster-imported-person")


def test_the_admin_reports_a_card_lost_and_the_terminal_declines_it(page, site: Site) -> None:  # noqa: ANN001, F811
    diner = site.world.diners[1]
    site.staff("admin", "cardweb")
    log_in(page, site, "cardweb")
    page.wait_for_url("**/dashboard")
    page.goto(f"{site.url}/people/{diner.holder_id}")
    check_page(page, "person-cards")
    page.get_by_role("button", name=f"挂失卡片 {diner.card_id}").click()
    assert "已挂失" in page.locator(".flash").inner_text()
    assert "已挂失" in page.locator("#cards-table").inner_text()
    assert site.cluster.wait_synced(30), "the terminal did not get the lost card"
    decision, _ = site.till.terminal.tap(TapRequest(diner.card_id, kind="shop", items=(("tissue", 1),)))
    assert not decision.approved

    page.get_by_label("新卡号").fill("04DD000001")
    page.get_by_role("button", name="补发新卡").click()
    assert "已补发新卡 04DD000001" in page.locator(".flash").inner_text()
    check_page(page, "person-card-replaced")
    assert site.cluster.wait_synced(30), "the terminal did not get the new card"
    site.tap("04DD000001")  # the purses stayed with the person


def test_every_registry_page_passes_the_checks(page, site: Site, tmp_path: Path) -> None:  # noqa: ANN001, F811
    conn = site.db()
    now = SystemClock().now_ms()
    leaver = site.world.diners[4]
    with write_txn(conn):  # a leaver whose refund waits for approval
        funds.topup(conn, leaver.card_id, 2_000, now, ref="web-registry-refund")
        leavers.leave(conn, leaver.holder_id, now)
        request = leavers.request_refund(
            conn, leaver.holder_id, now, "test", bank_account="6217003320001234567"
        )
    conn.close()
    site.staff("admin", "pagesweb")
    log_in(page, site, "pagesweb")
    page.wait_for_url("**/dashboard")
    for path, name in (
        ("/units", "units"),
        ("/units/U01", "unit"),
        ("/canteens", "canteens"),
        ("/canteens/C01", "canteen"),
        (f"/people/{site.world.diners[2].holder_id}/leave", "leave"),
        ("/refunds", "refunds"),
        (f"/refunds/{request['id']}", "refund"),
        ("/terminals", "terminals"),
        (f"/terminals/{site.till.id}", "terminal"),
    ):
        page.goto(site.url + path)
        open_details(page)
        check_page(page, name)
    page.goto(site.url + "/terminals")
    assert "已连接" in page.locator("#server-presence").inner_text()  # this server's own broker link
    assert "在线" in page.locator("#fleet-table").inner_text()

    # a refused form keeps the checks: the price above its reference, beside the field
    page.goto(site.url + "/canteens/C01")
    page.get_by_label("商品编号").fill("tissue")
    page.get_by_label("商品名称").fill("抽纸")
    page.get_by_label("售价（元）").fill("9.90")
    page.get_by_label("市场参考价（元）").fill("4.00")
    page.get_by_role("button", name="保存商品").click()
    assert "售价高于市场参考价" in page.locator("#item_price-error").inner_text()
    open_details(page)
    check_page(page, "canteen-refused")

    table = tmp_path / "附件表.csv"
    table.write_text("单位名称,中餐,食堂地点\n市财政局,十二,一楼\n市教育局,10,二楼\n", encoding="utf-8-sig")
    page.goto(site.url + "/canteens/import")
    check_page(page, "canteen-import")
    page.get_by_label("CSV 文件").set_input_files(str(table))
    page.get_by_role("button", name="上传并预览").click()
    assert "第 2 行" in page.locator("#line-errors").inner_text()
    check_page(page, "canteen-import-errors")
    table.write_text("单位名称,食堂名称,中餐,食堂地点\n市教育局,教育局食堂,10,二楼\n", encoding="utf-8-sig")
    page.get_by_label("CSV 文件").set_input_files(str(table))
    page.get_by_role("button", name="上传并预览").click()
    assert "变更 1 个" in page.locator("#preview-summary").inner_text()
    check_page(page, "canteen-import-preview")

    page.goto(site.url + "/terminals/new")
    check_page(page, "terminal-new")
    page.get_by_label("食堂").select_option("C02")
    page.get_by_role("button", name="登记").click()  # the default: a one-time enrolment code
    assert re.search(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){3}", page.locator("#enrolment-code").inner_text())
    check_page(page, "terminal-code")
    page.goto(site.url + "/updates")
    assert "服务器上还没有更新包" in page.locator("#bundles").inner_text()
    check_page(page, "updates")
