"""The web console in a real browser: Playwright driving Debian's Chromium against a real
server (HTTP, MQTT ingest, delta publisher), a real broker and a real terminal that sells.

Journeys: a staff member's first log-in forces a new password; five wrong passwords lock
the account; the admin's dashboard shows the takings after a terminal's sales are ingested;
a diner activates their account with the code their clerk printed and sees their balance
change after a tap; an auditor can change nothing; a clerk cannot open another unit's person
(403 page). Every page built so far passes axe-core's checks (labels, contrast, WCAG 2 A/AA)
and fits a 360 px wide phone without sideways scrolling.

Chromium: ``/usr/bin/chromium`` (``apt-get install chromium fonts-noto-cjk``, which .ci/run
does); Playwright's own browser download is not used. The tests skip, saying why, only when
that binary is missing. Each journey saves screenshots under ``tests/screenshots/`` (git-
ignored); ``make screenshots`` also writes the README's pictures to ``docs/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.books.periods import Quarter
from server.infra.db import write_txn
from server.registry import funds
from shared.clock import SystemClock
from simulator.harness.cluster import Cluster, TerminalHandle
from simulator.harness.world import World, demo_world
from terminal.authorize import TapRequest
from tests.web_support import NEW_PASSWORD, PASSWORD, make_staff

pytestmark = [pytest.mark.broker, pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "tests" / "screenshots"
# `make screenshots` sets this: the README's pictures of the main pages are written there too
README_SHOTS = os.environ.get("CANTEEN_SCREENSHOTS")
PHONE = {"width": 360, "height": 740}
# the pictures the README shows (docs/screenshots/<name>.png)
README_PAGES = frozenset({"dashboard", "diner-home", "directory", "people", "login"})


# --- the browser (pytest-playwright's fixtures, pointed at Debian's Chromium) --------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium fonts-noto-cjk; .ci/run does)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-background-networking"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "locale": "zh-CN", "timezone_id": "Asia/Shanghai"}


# --- a real server with a broker and a terminal --------------------------------------------


class Site:
    def __init__(self, cluster: Cluster, world: World, till: TerminalHandle) -> None:
        self.cluster = cluster
        self.world = world
        self.till = till
        self.url = cluster.server.base_url if cluster.server else ""

    def db(self):  # noqa: ANN201
        return self.cluster.db()

    def staff(self, role: str, username: str, *, must_change: bool = False) -> str:
        conn = self.db()
        try:
            return make_staff(conn, role, SystemClock().now_ms(), username, must_change=must_change)
        finally:
            conn.close()

    def tap(self, card_id: str, tissues: int = 1) -> None:
        decision, _ = self.till.terminal.tap(TapRequest(card_id, kind="shop", items=(("tissue", tissues),)))
        assert decision.approved, decision.reason
        assert self.cluster.drain(30), "the terminal's sales were not acknowledged"


@pytest.fixture(scope="module")
def site(broker, tmp_path_factory, request) -> Iterator[Site]:  # noqa: ANN001
    work = tmp_path_factory.mktemp("web")
    # terminal ids unique per module using this fixture: the broker (and what it retains) is shared
    prefix = f"W{os.getpid()}-{request.module.__name__.rsplit('_', 1)[-1][:8]}"
    with Cluster(work, broker=broker, terminal_prefix=prefix) as cluster:
        conn = cluster.db()
        now = SystemClock().now_ms()
        world = demo_world(conn, now, diners=12, quarter=str(Quarter.of_ms(now)))
        with write_txn(conn):
            funds.topup(conn, world.diners[0].card_id, 5_000, now, ref="web-test-topup")
        conn.close()
        till = cluster.add_terminal("C01")
        assert cluster.wait_synced(30), "the terminal did not get in sync"
        yield Site(cluster, world, till)


# --- helpers ----------------------------------------------------------------------------


def shot(page, name: str) -> None:  # noqa: ANN001
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if README_SHOTS and name in README_PAGES:
        target = Path(README_SHOTS)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.name)


def check_accessible(page) -> None:  # noqa: ANN001
    """axe-core's WCAG 2 A/AA rules (form labels, colour contrast, names, landmarks …) on the
    page as shown; injected through the DevTools protocol, so the page's CSP stays as it is."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    result = page.evaluate(
        "async () => { const r = await axe.run(document, "
        "{runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}}); "
        "return r.violations.map(v => ({id: v.id, help: v.help, "
        "nodes: v.nodes.map(n => n.html).slice(0, 3)})); }"
    )
    assert result == [], f"{page.url}: {result}"


def check_phone_width(page) -> None:  # noqa: ANN001
    """At 360 px nothing makes the page scroll sideways (wide tables scroll inside their box)."""
    size = page.viewport_size
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide at 360 px"
    if size:
        page.set_viewport_size(size)


def check_page(page, name: str) -> None:  # noqa: ANN001
    check_accessible(page)
    check_phone_width(page)
    shot(page, name)


def log_in(page, site: Site, username: str, password: str = PASSWORD) -> None:  # noqa: ANN001
    page.goto(site.url + "/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()


def log_out(page) -> None:  # noqa: ANN001
    page.get_by_role("button", name="退出").click()


# --- journeys -----------------------------------------------------------------------------


def test_public_pages_pass_the_checks(page, site: Site) -> None:  # noqa: ANN001
    for path, name in (
        ("/login", "login"),
        ("/diner/login", "diner-login"),
        ("/diner/activate", "diner-activate"),
        ("/directory", "directory"),
        ("/no-such-page", "error-404"),
    ):
        page.goto(site.url + path)
        check_page(page, name)
    assert "财政局食堂" in page.goto(site.url + "/directory").text()


def test_a_first_log_in_forces_a_new_password(page, site: Site) -> None:  # noqa: ANN001
    site.staff("admin", "firstday", must_change=True)
    log_in(page, site, "firstday")
    page.wait_for_url("**/password")
    assert page.get_by_role("heading", name="设置新密码").is_visible()
    check_page(page, "password-forced")
    page.get_by_label("当前密码").fill(PASSWORD)
    page.get_by_label("新密码", exact=True).fill("short")
    page.get_by_label("再次输入新密码").fill("short")
    page.get_by_role("button", name="保存新密码").click()
    assert "至少 8 位" in page.locator("#new_password-error").inner_text()  # beside the field
    check_accessible(page)  # the form with its errors
    page.get_by_label("当前密码").fill(PASSWORD)
    page.get_by_label("新密码", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("再次输入新密码").fill(NEW_PASSWORD)
    page.get_by_role("button", name="保存新密码").click()
    page.wait_for_url("**/dashboard")
    log_out(page)
    log_in(page, site, "firstday", PASSWORD)
    assert "用户名或密码错误" in page.locator(".error").inner_text()


def test_five_wrong_passwords_lock_the_account(page, site: Site) -> None:  # noqa: ANN001
    site.staff("clerk", "clumsy")
    for _ in range(5):
        log_in(page, site, "clumsy", "Wrong2026x")
    assert "已锁定 15 分钟" in page.locator("#password-error").inner_text()
    shot(page, "login-locked")
    log_in(page, site, "clumsy")  # the right password, while locked
    assert "已锁定" in page.locator("#password-error").inner_text()
    assert "/login" in page.url


def test_the_dashboard_shows_the_takings_after_a_terminal_sells(page, site: Site) -> None:  # noqa: ANN001
    site.staff("admin", "bureau")
    log_in(page, site, "bureau")
    page.wait_for_url("**/dashboard")
    before = page.locator("#takings-total").inner_text()
    for diner in site.world.diners[:3]:
        site.tap(diner.card_id, tissues=2)  # ¥7.00 each
    page.reload()
    after = page.locator("#takings-total").inner_text()
    assert before != after
    assert "财政局食堂" in page.locator("#takings-canteens").inner_text()
    assert "刷卡" in page.locator("#takings-methods").inner_text()
    assert "在线" in page.locator("#terminals").inner_text()
    assert page.locator("#sales-chart rect.bar").count() >= 1
    check_page(page, "dashboard")
    page.get_by_role("button", name="立即检查").click()
    assert "账本检查通过" in page.locator(".flash").inner_text()


def test_a_diner_activates_their_account_and_sees_their_balance_change(page, browser, site: Site) -> None:  # noqa: ANN001
    diner = site.world.diners[0]  # in U01, topped up ¥50
    site.staff("clerk", "clerkweb")
    log_in(page, site, "clerkweb")
    page.wait_for_url("**/people")
    page.get_by_label("姓名、工号或卡号").fill(diner.card_id)
    page.get_by_role("button", name="搜索").click()
    check_page(page, "people")
    page.get_by_role("link", name=diner.name).first.click()
    check_page(page, "person")
    page.get_by_role("button", name="打印激活码").click()
    code = page.locator("#activation-code").inner_text()
    check_page(page, "activation-slip")
    log_out(page)

    phone = browser.new_context(viewport=PHONE, locale="zh-CN", timezone_id="Asia/Shanghai", is_mobile=True)
    mobile = phone.new_page()
    mobile.goto(site.url + "/diner/activate")
    staff_no = f"{diner.unit_id}-0001"
    mobile.get_by_label("工号").fill(staff_no)
    mobile.get_by_label("激活码").fill(code)
    mobile.get_by_label("设置密码").fill(NEW_PASSWORD)
    mobile.get_by_label("再次输入密码").fill(NEW_PASSWORD)
    mobile.get_by_role("button", name="开通并登录").click()
    mobile.wait_for_url("**/me")
    self_before = mobile.locator("#purse-self .big").inner_text()
    subsidy_before = mobile.locator("#purse-subsidy .big").inner_text()
    assert "将于" in mobile.locator("#purse-subsidy").inner_text()  # what expires at the year end
    site.tap(diner.card_id)  # ¥3.50, from the subsidy purse first
    mobile.reload()
    assert mobile.locator("#purse-subsidy .big").inner_text() != subsidy_before
    assert mobile.locator("#purse-self .big").inner_text() == self_before
    assert "经费 ¥3.50" in mobile.locator("#history").inner_text()
    check_page(mobile, "diner-home")
    phone.close()


def test_an_auditor_can_change_nothing(page, site: Site) -> None:  # noqa: ANN001
    site.staff("auditor", "auditweb")
    log_in(page, site, "auditweb")
    page.wait_for_url("**/dashboard")
    assert page.get_by_role("button", name="立即检查").count() == 0
    page.goto(site.url + "/people/H00002")
    assert page.get_by_role("button", name=re.compile("激活码")).count() == 0
    conn = site.db()
    before = conn.execute("SELECT count(*) FROM web_accounts").fetchone()[0]
    # post the form anyway, as a crafted page would (with a valid token)
    with page.expect_navigation():
        page.evaluate(
            """() => { const f = document.createElement('form'); f.method = 'post';
        f.action = '/people/H00002/activation'; const t = document.createElement('input');
        t.type = 'hidden'; t.name = 'csrf_token';
        t.value = document.querySelector('input[name=csrf_token]').value; f.appendChild(t);
        document.body.appendChild(f); f.submit(); }"""
        )
    assert page.get_by_role("heading", name=re.compile("无权访问")).is_visible()
    assert conn.execute("SELECT count(*) FROM web_accounts").fetchone()[0] == before
    conn.close()


def test_a_clerk_cannot_open_another_units_person(page, site: Site) -> None:  # noqa: ANN001
    site.staff("clerk", "clerku01")  # U01; H00002 is in U02
    log_in(page, site, "clerku01")
    page.wait_for_url("**/people")
    response = page.goto(site.url + "/people/H00002")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", name=re.compile("无权访问")).is_visible()
    assert "H00002" not in page.content()
    check_page(page, "error-403")
