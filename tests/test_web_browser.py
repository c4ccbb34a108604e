"""The web console in a real browser: Playwright driving Debian's Chromium against a real
server (HTTP, MQTT ingest, delta publisher), a real broker and a real terminal that sells.

Journeys: a staff member's first log-in forces a new password; five wrong passwords lock
the account; the admin's dashboard shows the takings after a terminal's sales are ingested;
a diner activates their account with the code their clerk printed, sees their balance
change after a tap, shows the pay code and pays with it at the terminal (the code read off
the screen with zxing-cpp, as a scanner reads it; the page's script swaps in a new one before
it runs out), rates that meal, sets a PIN, tops up from the simulated digital RMB wallet,
reports the card lost, and the next tap of the card is declined; an auditor can change
nothing; a clerk cannot open another unit's person (403 page). Every page built so far
passes axe-core's checks (labels, contrast, WCAG 2 A/AA) and fits a 360 px wide phone
without sideways scrolling.

Chromium: ``/usr/bin/chromium`` (``apt-get install chromium fonts-noto-cjk``, which .ci/run
does); Playwright's own browser download is not used. The tests skip, saying why, only when
that binary is missing. Each journey saves screenshots under ``tests/screenshots/`` (git-
ignored); ``make screenshots`` also writes the README's pictures to ``docs/screenshots/``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from server.books.periods import Quarter
from server.infra.db import write_txn
from server.registry import funds
from shared.clock import SystemClock
from shared.ecny_gateway import SimulatedGateway
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
README_PAGES = frozenset({"dashboard", "diner-home", "diner-pay", "directory", "people", "login"})


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
        # digital RMB top-ups from the diner's phone: the simulated gateway (no bank here)
        cluster.server.app.extensions["ecny_gateway"] = SimulatedGateway(SystemClock())  # type: ignore[union-attr]
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


def read_pay_code(page) -> str:  # noqa: ANN001
    """The pay code as a terminal's scanner reads it: decoded from the phone's screen."""
    shot_png = page.locator("#pay-qr svg").screenshot()
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot_png)).convert("L"))
    assert len(found) == 1, "no QR code on the screen"
    return found[0].text


def test_a_diners_journey_from_activation_to_a_lost_card(page, browser, site: Site) -> None:  # noqa: ANN001
    """Activate the account, see the balance change after a tap, show the pay code and pay
    with it at the terminal, rate that meal, set a PIN, top up from the (simulated) digital
    RMB wallet, report the card lost — and the next tap of the card is declined."""
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
    mobile.clock.install()  # the page's timers run when the test says (the pay code's refresh)
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

    # the pay code: open QR payment, show the code, pay with it at the terminal
    mobile.get_by_role("link", name="出示付款码").click()
    check_page(mobile, "diner-pay-off")
    mobile.get_by_role("button", name="开通扫码支付").click()
    assert site.cluster.wait_synced(30), "the terminal did not learn the new QR key"
    shown = read_pay_code(mobile)
    check_page(mobile, "diner-pay")
    decision, _ = site.till.terminal.tap(
        TapRequest(None, method="qr", kind="shop", items=(("water", 1),), credential=shown)
    )
    assert decision.approved, decision.reason
    assert site.cluster.drain(30)
    # the page swaps in a new code before the shown one runs out (its script, clock run ahead)
    mobile.clock.run_for(55_000)
    mobile.wait_for_function("n => document.getElementById('paycode-seconds').textContent > 30", arg=None)
    fresh = read_pay_code(mobile)
    assert fresh != shown and fresh.split(".")[1] == diner.card_id

    # rate that meal (the newest sale: paid by code), once
    mobile.get_by_role("link", name="账户", exact=True).click()
    assert "扫码" in mobile.locator("#history li").first.inner_text()
    mobile.locator("#history li").first.get_by_role("link", name=re.compile("评价这一餐")).click()
    check_page(mobile, "diner-rate")
    mobile.get_by_role("button", name="提交评价").click()  # nothing chosen: the reasons beside
    assert "请选择分数" in mobile.locator("#service-error").inner_text()
    check_accessible(mobile)
    mobile.locator("fieldset", has_text="服务").get_by_label("5 分 很满意").check()
    mobile.locator("fieldset", has_text="饭菜").get_by_label("4 分 满意").check()
    mobile.get_by_label("意见或建议（可不填）").fill("矿泉水很凉")
    mobile.get_by_role("button", name="提交评价").click()
    mobile.wait_for_url("**/me")
    assert "已评价" in mobile.locator("#history li").first.inner_text()

    # the payment PIN
    mobile.get_by_role("link", name="卡与密码", exact=True).click()
    mobile.get_by_role("link", name="设置支付密码").click()
    check_page(mobile, "diner-pin")
    mobile.get_by_label("新支付密码", exact=True).fill("271828")
    mobile.get_by_label("再次输入新支付密码").fill("271828")
    mobile.get_by_role("button", name="保存支付密码").click()
    assert "已设置支付密码" in mobile.locator("#pin-state").inner_text()
    mobile.get_by_role("link", name="忘记支付密码").click()
    check_page(mobile, "diner-pin-reset")

    # top up ¥50 from the simulated digital RMB wallet
    mobile.get_by_role("link", name="充值", exact=True).first.click()
    check_page(mobile, "diner-topup")
    mobile.get_by_role("button", name="¥50", exact=True).click()
    check_page(mobile, "diner-topup-order")
    mobile.get_by_role("link", name=re.compile("打开数字人民币钱包")).click()
    check_page(mobile, "diner-wallet")
    mobile.get_by_role("button", name=re.compile("确认支付")).click()
    assert mobile.locator("#order-status").inner_text() == "已到账"
    assert "¥50.00 已充入自费账户" in mobile.locator("main").inner_text()

    # report the card lost: blocked at once, the next tap of it is declined
    mobile.get_by_role("link", name="卡与密码", exact=True).click()
    check_page(mobile, "diner-card")
    mobile.get_by_label(re.compile("我确认挂失这张卡")).check()
    mobile.get_by_role("button", name="挂失此卡").click()
    assert "已挂失并立即停用" in mobile.locator(".flash").inner_text()
    assert "已挂失" in mobile.locator("#my-cards").inner_text()
    check_page(mobile, "diner-card-lost")
    assert site.cluster.wait_synced(30), "the terminal did not get the lost card"
    declined, _ = site.till.terminal.tap(TapRequest(diner.card_id, kind="shop", items=(("tissue", 1),)))
    assert not declined.approved and declined.reason == "card_blocked"
    mobile.get_by_role("link", name="付款码", exact=True).click()
    assert "不能使用付款码" in mobile.locator("main").inner_text()
    mobile.goto(site.url + "/directory")
    check_page(mobile, "diner-directory")
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
