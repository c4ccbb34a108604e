"""The money pages in a real browser: Playwright driving Debian's Chromium against a real
server (HTTP, MQTT ingest, delta publisher), a real broker and two real terminals, all on one
simulated clock (as ``canteen-sim replay`` runs them), so a quarter can end during the test.

The journey: on the last evening of 2026Q1 the admin finds a unit whose allocation is missing
and allocates it (a mistyped amount first, refused beside the field); a terminal sells to that
unit's staff with the new subsidy; the dashboard shows the takings and the second terminal,
cut off, offline; after midnight the admin previews the quarter's settlement (the cut-off
terminal named), the terminal comes back, the preview is clean, the admin confirms, and
downloads the statements as CSV and xlsx — opened and checked against the page. An operator
sees only their own canteen. Every page of the money, report, clerk and operator areas passes
axe-core and the 360 px check (tests/test_web_browser.py's checks); the journey saves
screenshots, and ``make screenshots`` copies the settlement preview to the README's pictures.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from openpyxl import load_workbook

from server.books.periods import Quarter
from server.closing import quality
from server.downstream.deltas import current_version
from server.infra.db import write_txn
from server.registry import operators
from server.registry import units as registry
from shared.clock import FakeClock, ms_from_china
from simulator.harness.cluster import Cluster, TerminalHandle
from simulator.harness.world import World, demo_world
from simulator.waiting import wait_until
from terminal.authorize import TapRequest
from tests.test_web_browser import (  # noqa: F401  # the browser fixtures, pointed at Debian's Chromium
    README_SHOTS,
    SHOTS,
    browser_context_args,
    browser_type_launch_args,
    check_accessible,
    check_page,
    log_in,
    log_out,
    shot,
)
from tests.web_support import make_staff

pytestmark = [pytest.mark.broker, pytest.mark.browser, pytest.mark.slow]

Q1 = Quarter(2026, 1)
EVENING = ms_from_china("2026-03-31T23:45")  # the last evening of 2026Q1 (a Tuesday)
README_PAGES = frozenset({"settlement-preview"})


class Site:
    def __init__(
        self, cluster: Cluster, clock: FakeClock, world: World, tills: dict[str, TerminalHandle]
    ) -> None:
        self.cluster = cluster
        self.clock = clock
        self.world = world
        self.tills = tills
        self.url = cluster.server.base_url if cluster.server else ""

    def staff(self, role: str, username: str) -> None:
        conn = self.cluster.db()
        try:
            make_staff(conn, role, self.clock.now_ms(), username)
        finally:
            conn.close()

    def query(self, sql: str, *args: object) -> list[tuple]:
        conn = self.cluster.db()
        try:
            return [tuple(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()

    def synced(self, canteen: str) -> bool:
        """The canteen's terminal has every registry change (a new allocation's balances)."""
        conn = self.cluster.db()
        try:
            return self.tills[canteen].terminal.store.delta_version >= current_version(conn)
        finally:
            conn.close()

    def heard_since(self, canteen: str, at_ms: int) -> bool:
        """The server has a heartbeat of the canteen's terminal sent at or after ``at_ms``."""
        rows = self.query("SELECT last_status_ms FROM terminals WHERE id = ?", self.tills[canteen].id)
        return bool(rows and rows[0][0] is not None and rows[0][0] >= at_ms)

    def past(self, canteen: str, cutoff_ms: int) -> bool:
        rows = self.query("SELECT watermark_ms FROM terminals WHERE id = ?", self.tills[canteen].id)
        return bool(rows and rows[0][0] is not None and rows[0][0] >= cutoff_ms)

    def tap(self, canteen: str, card_id: str, tissues: int = 1) -> None:
        till = self.tills[canteen].terminal
        decision, _ = till.tap(TapRequest(card_id, kind="shop", items=(("tissue", tissues),)))
        assert decision.approved, decision.reason
        assert self.cluster.drain(30), "the terminal's sales were not acknowledged"


@pytest.fixture(scope="module")
def site(broker, tmp_path_factory) -> Iterator[Site]:  # noqa: ANN001
    work = tmp_path_factory.mktemp("web-money")
    clock = FakeClock(ms_from_china("2026-01-05T09:00"))
    with Cluster(work, broker=broker, clock=clock, terminal_prefix=f"M{os.getpid()}") as cluster:
        conn = cluster.db()
        world = demo_world(conn, clock.now_ms(), diners=12, quarter=str(Q1))  # on time, 5 January
        with write_txn(conn):  # a fourth unit, whose clerk never allocated 2026Q1
            registry.add_unit(conn, "U04", "市统计局", 27_000)
            for i in (1, 2, 3):
                registry.add_holder(
                    conn,
                    f"H0400{i}",
                    "U04",
                    f"统计{i}",
                    f"C0400{i}",
                    staff_no=f"U04-000{i}",
                    now_ms=clock.now_ms(),
                )
            # C01's unit scores its operator 88 for the quarter (98 % paid); the payee's bank account
            quality.set_bands(conn, "C01", [[90, 100], [80, 98], [0, 95]])
            quality.set_score(conn, "C01", str(Q1), 88, clock.now_ms(), "clerk")
            operators.set_operator(
                conn,
                "湘味餐饮有限公司",
                company_name="湘味餐饮有限公司",
                bank_name="中国工商银行长沙分行",
                bank_account="6222 0219 0100 1234 567",
            )
        conn.close()
        clock.set_ms(EVENING)
        tills = {"C01": cluster.add_terminal("C01"), "C02": cluster.add_terminal("C02")}
        assert cluster.wait_synced(30), "the terminals did not get in sync"
        yield Site(cluster, clock, world, tills)


def readme_shot(page, name: str) -> None:  # noqa: ANN001
    shot(page, name)
    if README_SHOTS and name in README_PAGES:
        target = Path(README_SHOTS)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHOTS / f"{name}.png", target / f"{name}.png")


def download(page, link):  # noqa: ANN001, ANN201
    with page.expect_download() as info:
        link.click()
    return Path(info.value.path()).read_bytes(), info.value.suggested_filename


# --- the journey ----------------------------------------------------------------------------


def test_the_admin_allocates_a_terminal_sells_and_the_quarter_is_settled(page, site: Site) -> None:  # noqa: ANN001, PLR0915
    site.tills["C02"].cut()  # C02's terminal loses its line for the rest of the evening
    site.staff("admin", "finance")
    log_in(page, site, "finance")
    page.wait_for_url("**/dashboard")
    assert "市统计局（未拨付）" in page.locator("#alerts").inner_text()

    # the allocations: 市统计局 has none for 2026Q1, due by 10 January
    page.get_by_role("link", name="经费", exact=True).click()
    page.wait_for_url("**/money/allocations")
    rows = page.locator("#allocation-status-table tbody tr")
    assert "逾期未拨付" in rows.filter(has_text="市统计局").inner_text()
    check_page(page, "money-allocations")
    page.get_by_role("link", name="拨付经费").click()
    page.get_by_label("单位", exact=True).select_option("U04")
    page.get_by_label("每人金额（元）").fill("270.005")  # a slip of the finger
    page.get_by_role("button", name="确认拨付").click()
    assert "最多两位小数" in page.locator("#per_person-error").inner_text()
    check_page(page, "money-allocate-refused")
    assert site.query("SELECT count(*) FROM allocations WHERE unit_id = 'U04'") == [(0,)]
    page.get_by_label("每人金额（元）").fill("")  # the unit's standard
    page.get_by_role("button", name="确认拨付").click()
    page.wait_for_url(re.compile(r"/money/allocations\?quarter=2026Q1$"))
    assert "每人 ¥270.00 × 3 人 = ¥810.00" in page.locator(".flash").inner_text()
    assert "逾期拨付" in rows.filter(has_text="市统计局").inner_text()

    # the terminal sells to 市统计局's staff on their new subsidy, and to others
    assert wait_until(lambda: site.synced("C01"), 30), "C01's terminal did not get the allocation"
    site.tap("C01", "C04001", tissues=2)  # ¥7.00
    site.tap("C01", "C04002")  # ¥3.50
    site.tap("C01", site.world.diners[0].card_id, tissues=3)  # ¥10.50
    assert site.query("SELECT sum(amount_fen) FROM sales WHERE holder_id LIKE 'H04%'") == [(1050,)]

    # two minutes later: the dashboard shows the takings, C01's terminal online, C02's offline
    site.clock.advance_ms(120_000)
    now = site.clock.now_ms()
    assert wait_until(lambda: site.heard_since("C01", now), 30), "C01's terminal sent no heartbeat"
    page.get_by_role("link", name="总览").click()
    assert "¥21.00" in page.locator("#takings-total").inner_text()
    terminals = page.locator("#terminals")
    assert "在线" in terminals.locator("tr", has_text=site.tills["C01"].id).inner_text()
    assert "离线" in terminals.locator("tr", has_text=site.tills["C02"].id).inner_text()
    shot(page, "money-dashboard-after-sales")

    # after midnight the quarter has ended; C01's terminal reports past its end, C02's cannot
    site.clock.set_ms(ms_from_china("2026-04-01T00:03"))
    assert wait_until(lambda: site.past("C01", Q1.end_ms), 30), "C01's terminal did not report past 2026Q1"
    page.get_by_role("link", name="结算", exact=True).click()
    assert "下一个结算季度：2026Q1" in page.content()
    check_page(page, "money-settlements")
    page.get_by_role("link", name="预览 2026Q1 结算单").click()
    assert "预览（尚未结账）" in page.locator("h1").inner_text()
    laggards = page.locator("#laggards").inner_text()
    assert "1 台终端尚未上报至季末" in laggards and site.tills["C02"].id in laggards
    shot(page, "settlement-preview-laggard")

    # C02's terminal comes back, reports; the preview is clean and lists every statement
    site.tills["C02"].heal()
    assert wait_until(lambda: site.past("C02", Q1.end_ms), 60), "C02's terminal did not report past 2026Q1"
    page.reload()
    assert page.locator("#laggards").count() == 0
    statements = page.locator("#statements tbody tr")
    assert statements.count() == 2
    c01 = statements.filter(has_text="财政局食堂")
    gross = c01.locator("td").nth(2).inner_text()
    net = c01.locator("td").nth(9).inner_text()
    # scored 88: 98 % paid (¥0.42 withheld), then the 0.5 % fee: 10.29 fen, rounded to 10
    assert gross == "¥21.00" and c01.locator("td").nth(6).inner_text() == "¥0.42" and net == "¥20.48"
    check_page(page, "settlement-preview")
    readme_shot(page, "settlement-preview")
    assert site.query("SELECT count(*) FROM settlement_periods") == [(0,)]  # the preview booked nothing

    # closing needs the explicit confirmation
    page.get_by_role("button", name="确认结账").click()
    assert "请先勾选确认" in page.locator("#confirm-error").inner_text()
    check_accessible(page)
    page.get_by_label("我已逐一核对以上结算单").check()
    page.get_by_role("button", name="确认结账").click()
    assert "2026Q1 已结账" in page.locator(".flash").inner_text()
    assert "已结账" in page.locator("h1").inner_text()
    check_page(page, "settlement-closed")
    assert site.query("SELECT net_fen FROM statements WHERE quarter = '2026Q1' AND canteen_id = 'C01'") == [
        (2048,)
    ]

    # the statements as CSV and as Excel, opened and checked against the page
    files = page.locator("p.downloads", has_text="下载结算单")
    data, name = download(page, files.get_by_role("link", name="CSV"))
    assert name == "结算单-2026Q1.csv" and data.startswith("\ufeff".encode())
    table = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    line = next(r for r in table if r["食堂编号"] == "C01" and r["类型"] == "结算")
    assert (line["消费金额"], line["应付金额"], line["应付金额(分)"]) == (gross, net, "2048")
    data, name = download(page, files.get_by_role("link", name="Excel"))
    assert name == "结算单-2026Q1.xlsx"
    ws = load_workbook(io.BytesIO(data)).active
    header = [c.value for c in ws[1]]
    row = next(r for r in ws.iter_rows(min_row=2, values_only=True) if r[header.index("食堂编号")] == "C01")
    assert row[header.index("应付金额(分)")] == 2048 and float(row[header.index("应付金额")]) == 20.48
    payouts = page.locator("p.downloads", has_text="下载付款清单")
    data, _ = download(page, payouts.get_by_role("link", name="Excel"))
    paid = [r[4] for r in load_workbook(io.BytesIO(data)).active.iter_rows(min_row=2, values_only=True)]
    assert (
        sum(paid)
        == site.query("SELECT sum(net_fen) FROM statements WHERE quarter = '2026Q1' AND net_fen > 0")[0][0]
    )
    log_out(page)


def test_an_operator_sees_only_their_own_canteen(page, site: Site) -> None:  # noqa: ANN001
    site.staff("operator", "xiangwei")  # 湘味餐饮有限公司 runs C01, not C02
    log_in(page, site, "xiangwei")
    page.wait_for_url("**/operator")
    text = page.locator("main").inner_text()
    assert "财政局食堂" in text and "教育局食堂" not in text
    check_page(page, "operator-home")
    page.goto(site.url + "/money/settlements/2026Q1")
    statements = page.locator("#statements").inner_text()
    assert "财政局食堂" in statements and "教育局食堂" not in statements
    assert page.locator("#payouts").count() == 0  # the payout list is the bureau's
    check_page(page, "operator-statement")
    response = page.goto(site.url + "/reports/matrix")
    assert response is not None and response.status == 403
    page.goto(site.url + "/reports/daily?date=2026-03-31")
    assert "教育局食堂" not in page.locator("main").inner_text()
    check_page(page, "operator-daily")
    for path, name in (
        ("/operator/ratings", "operator-ratings"),
        ("/reports/methods?quarter=2026Q1", "operator-methods"),
    ):
        page.goto(site.url + path)
        check_page(page, name)
    log_out(page)


@pytest.mark.parametrize(
    ("role", "pages"),
    [
        (
            "admin",
            (
                "/money/topup",
                "/money/clearings?year=2025",
                "/reports",
                "/reports/quarterly?quarter=2026Q1",
                "/reports/matrix?quarter=2026Q1",
                "/reports/quality?quarter=2026Q1",
                "/reports/overdrafts",
                "/reports/blocked-cards",
                "/reports/methods?quarter=2026Q1",
            ),
        ),
        (
            "clerk",
            ("/unit?quarter=2026Q1", "/quality/score?canteen_id=C01&quarter=2026Q2", "/money/allocate"),
        ),
    ],
)
def test_every_money_and_report_page_passes_the_checks(
    page, site: Site, role: str, pages: tuple[str, ...]
) -> None:  # noqa: ANN001
    site.staff(role, f"{role}pages")
    log_in(page, site, f"{role}pages")
    page.wait_for_load_state()
    for path in pages:
        response = page.goto(site.url + path)
        assert response is not None and response.status == 200, path
        name = path.strip("/").split("?")[0].replace("/", "-")
        check_page(page, f"{role}-{name}")
    log_out(page)
