"""The diner's portal, page by page through the Flask test client (the browser journey is in
tests/test_web_browser.py): the pay code (fresh, refreshed, working without JavaScript),
reporting the card lost (the API's function: blocked at once, a delta for every terminal),
the payment PIN (set, change with the old one, reset with the log-in password), rating one's
own meal once, topping up through the (simulated) digital RMB gateway — credited once, for
exactly what was paid — and, throughout, a diner seeing and touching only themselves."""

from __future__ import annotations

import re

import pytest

from server.books import ledger
from server.closing.check import all_violations
from server.infra.db import write_txn
from server.registry import pins
from server.registry.terminals import provision
from server.sales import ecny_topups, qr_codes
from server.sales.ingest import IngestWorker
from server.sales.qr_render import svg
from shared.ecny_gateway import SimulatedGateway
from shared.paycode import make_code
from shared.protocol import topics
from tests.helpers import populated, sale, signed_batch
from tests.web_support import (
    DINER_HOLDER,
    DINER_STAFF_NO,
    PASSWORD,
    csrf_of,
    diner_login,
    make_diner,
    post_form,
    text_of,
)

CARD = "C00001"  # H00001's card (U01, 工号 U01-0001)
OTHER_HOLDER, OTHER_CARD = "H00002", "C00002"


@pytest.fixture
def diner(app, conn, clock, client):  # noqa: ANN001, ANN201
    """The city, a terminal at C01, and diner H00001 signed in on ``client``."""
    populated(conn, clock.now_ms())
    make_diner(conn, DINER_HOLDER, DINER_STAFF_NO, clock.now_ms())
    assert diner_login(client).status_code == 302
    with write_txn(conn):
        creds = provision(conn, "C01", clock.now_ms(), "00" * 32, terminal_id="T-web-diner")
    return creds


def ingest(conn, clock, creds, *sales) -> None:  # noqa: ANN001
    IngestWorker(conn, clock, lambda *a: True).process(
        [(topics.sales(creds.terminal_id), signed_batch(creds, list(sales), clock.now_ms()))]
    )


def card_status(conn, card_id: str) -> str:  # noqa: ANN001
    return conn.execute("SELECT status FROM cards WHERE card_id = ?", (card_id,)).fetchone()[0]


# --- the pay code ------------------------------------------------------------------------


def test_the_pay_code_is_a_fresh_signed_code_for_the_diners_card(app, conn, clock, client, diner) -> None:  # noqa: ANN001
    first = text_of(client.get("/me/pay"))
    assert "开通扫码支付" in first and "<svg" not in first
    assert post_form(client, "/me/pay/enable", {}, page="/me/pay").status_code == 302
    [cred] = qr_codes.for_holder(conn, DINER_HOLDER)
    assert cred.card_id == CARD and cred.active(clock.now_ms())

    counter = conn.execute("SELECT next_counter FROM qr_credentials").fetchone()[0]
    page = client.get("/me/pay")
    html = text_of(page)
    assert page.headers["Cache-Control"] == "no-store"
    # the picture is the code the credential signs for this card, counter and second
    seed = qr_codes.credential_seed(qr_codes.qr_secret(app.extensions["canteen_server_key"]), cred.id)
    assert svg(make_code(seed, CARD, counter, clock.now_ms())) in html
    assert 'data-seconds="60"' in html and "C0****01" in html

    again = client.get("/me/pay/code.json").get_json()  # what the page's script fetches
    assert again["svg"] == svg(make_code(seed, CARD, counter + 1, clock.now_ms())) and again["seconds"] == 60


def test_the_pay_code_page_works_without_javascript(client, diner) -> None:  # noqa: ANN001
    post_form(client, "/me/pay/enable", {}, page="/me/pay")
    html = text_of(client.get("/me/pay"))
    refresh = re.search(r'<noscript><meta http-equiv="refresh" content="(\d+)"></noscript>', html)
    assert refresh and int(refresh.group(1)) < 60  # reloads before the code runs out
    assert re.search(r'<a class="button" id="paycode-refresh" href="/me/pay">刷新付款码</a>', html)
    assert "<script>" not in html and 'src="/static/paycode.js"' in html  # no inline script (CSP)
    assert client.get("/static/paycode.js").status_code == 200


# --- the card ----------------------------------------------------------------------------


def test_reporting_the_card_lost_blocks_it_at_once_for_every_terminal(conn, clock, client, diner) -> None:  # noqa: ANN001
    post_form(client, "/me/pay/enable", {}, page="/me/pay")
    version = conn.execute("SELECT max(version) FROM deltas").fetchone()[0]
    unconfirmed = post_form(client, "/me/card/lost", {"card_id": CARD}, page="/me/card")
    assert unconfirmed.status_code == 400 and "请勾选确认" in text_of(unconfirmed)
    assert card_status(conn, CARD) == "active"

    resp = post_form(client, "/me/card/lost", {"card_id": CARD, "confirm": "y"}, page="/me/card")
    assert resp.status_code == 302
    assert card_status(conn, CARD) == "lost"
    delta = conn.execute("SELECT changes_json FROM deltas WHERE version > ?", (version,)).fetchone()[0]
    assert f'"card_id": "{CARD}"' in delta.replace('":"', '": "') and "lost" in delta
    page = text_of(client.get("/me/card"))
    assert "已挂失" in page and "挂失此卡" not in page  # nothing left to report
    assert "不能使用付款码" in text_of(client.get("/me/pay"))
    assert client.get("/me/pay/code.json").status_code != 200


def test_a_diner_cannot_report_someone_elses_card(conn, client, diner) -> None:  # noqa: ANN001
    resp = post_form(client, "/me/card/lost", {"card_id": OTHER_CARD, "confirm": "y"}, page="/me/card")
    assert resp.status_code == 400  # not among their cards: refused beside the field
    assert card_status(conn, OTHER_CARD) == "active"
    assert OTHER_CARD not in text_of(client.get("/me/card"))


# --- the payment PIN ---------------------------------------------------------------------


def test_setting_and_changing_the_payment_pin(conn, clock, client, diner) -> None:  # noqa: ANN001
    page = text_of(client.get("/me/pin"))
    assert "当前支付密码" not in page  # a first PIN needs no old one
    simple = post_form(client, "/me/pin", {"pin": "123456", "confirm": "123456"})
    assert simple.status_code == 400 and 'id="pin-error"' in text_of(simple)
    assert not pins.has_pin(conn, DINER_HOLDER)
    differ = post_form(client, "/me/pin", {"pin": "271828", "confirm": "271829"})
    assert differ.status_code == 400 and "两次输入的支付密码不一致" in text_of(differ)
    assert post_form(client, "/me/pin", {"pin": "271828", "confirm": "271828"}).status_code == 302
    assert pins.verify(conn, DINER_HOLDER, "271828", clock.now_ms()).result == "ok"

    wrong = post_form(client, "/me/pin", {"old_pin": "000000", "pin": "314159", "confirm": "314159"})
    assert wrong.status_code == 400
    assert re.search(r'id="old_pin-error">支付密码错误：还可再试 4 次', text_of(wrong))
    assert conn.execute("SELECT failed_tries FROM holder_pins").fetchone()[0] == 1  # the try is kept
    ok = post_form(client, "/me/pin", {"old_pin": "271828", "pin": "314159", "confirm": "314159"})
    assert ok.status_code == 302
    assert pins.verify(conn, DINER_HOLDER, "314159", clock.now_ms()).result == "ok"


def test_a_forgotten_pin_is_reset_with_the_log_in_password(conn, clock, client, diner) -> None:  # noqa: ANN001
    with write_txn(conn):
        pins.set_pin(conn, DINER_HOLDER, "271828", clock.now_ms(), "test")
        for _ in range(pins.MAX_TRIES):
            pins.verify(conn, DINER_HOLDER, "000000", clock.now_ms())
    assert pins.verify(conn, DINER_HOLDER, "271828", clock.now_ms()).result == "locked"
    bad = post_form(client, "/me/pin/reset", {"password": "Wrong2026x", "pin": "314159", "confirm": "314159"})
    assert bad.status_code == 400 and "网页登录密码错误" in text_of(bad)
    failures = conn.execute("SELECT failed_logins FROM web_accounts WHERE holder_id = ?", (DINER_HOLDER,))
    assert failures.fetchone()[0] == 1  # counted like a failed log-in
    good = post_form(client, "/me/pin/reset", {"password": PASSWORD, "pin": "314159", "confirm": "314159"})
    assert good.status_code == 302
    assert pins.verify(conn, DINER_HOLDER, "314159", clock.now_ms()).result == "ok"  # the lock is lifted


# --- rating a meal -----------------------------------------------------------------------


def test_a_diner_rates_their_own_meal_once(conn, clock, client, diner) -> None:  # noqa: ANN001
    mine = sale(diner, 1, CARD, 350, clock.now_ms())
    theirs = sale(diner, 2, OTHER_CARD, 350, clock.now_ms())
    ingest(conn, clock, diner, mine, theirs)
    home = text_of(client.get("/me"))
    assert f"/me/sales/{mine.uuid}/rate" in home and theirs.uuid not in home

    url = f"/me/sales/{mine.uuid}/rate"
    blank = post_form(client, url, {"comment": "x" * 201})
    assert blank.status_code == 400
    assert 'id="service-error">请选择分数' in text_of(blank) and "最多 200 字" in text_of(blank)
    assert post_form(client, url, {"service": "5", "food": "4", "comment": "红烧肉好吃"}).status_code == 302
    stored = conn.execute("SELECT holder_id, service, food, comment FROM ratings").fetchall()
    assert [tuple(r) for r in stored] == [(DINER_HOLDER, 5, 4, "红烧肉好吃")]
    assert "已评价" in text_of(client.get("/me"))

    again = client.get(url)
    assert "每笔消费只能评价一次" in text_of(again) and "提交评价" not in text_of(again)
    token = csrf_of(text_of(client.get("/me/pin")))
    client.post(url, data={"csrf_token": token, "service": "1", "food": "1"})
    assert conn.execute("SELECT count(*), max(service) FROM ratings").fetchone()[:] == (1, 5)

    other = client.get(f"/me/sales/{theirs.uuid}/rate")
    assert other.status_code == 403 and "只能评价本人的消费" in text_of(other)
    assert client.get("/me/sales/no-such-sale/rate").status_code == 404


# --- top-up through the digital RMB gateway ----------------------------------------------


@pytest.fixture
def gateway(app, clock):  # noqa: ANN001, ANN201
    gw = SimulatedGateway(clock)
    app.extensions["ecny_gateway"] = gw
    return gw


def self_fen(conn) -> int:  # noqa: ANN001
    return ledger.balance(conn, ledger.self_purse(DINER_HOLDER))


def test_a_top_up_paid_in_the_wallet_reaches_the_self_purse_once(conn, clock, client, diner, gateway) -> None:  # noqa: ANN001
    before = self_fen(conn)
    resp = post_form(client, "/me/topup", {"amount": "100"})
    assert resp.status_code == 302
    order_no = resp.headers["Location"].rsplit("/", 1)[1]
    page = text_of(client.get(f"/me/topup/{order_no}"))
    assert "待支付" in page and "<svg" in page and f"/me/topup/{order_no}/wallet" in page

    assert "确认支付 ¥100.00" in text_of(client.get(f"/me/topup/{order_no}/wallet"))
    paid = post_form(client, f"/me/topup/{order_no}/wallet", {})
    assert paid.status_code == 302
    done = text_of(client.get(f"/me/topup/{order_no}"))
    assert "已到账" in done and self_fen(conn) == before + 10_000
    client.get(f"/me/topup/{order_no}")  # looking again credits nothing more
    assert self_fen(conn) == before + 10_000
    txn = conn.execute("SELECT count(*) FROM txns WHERE kind = 'topup' AND ref = ?", (f"ecny:{order_no}",))
    assert txn.fetchone()[0] == 1
    assert gateway.wallets[f"sim-{DINER_HOLDER}"].balance_fen == 1_000_000 - 10_000
    assert all_violations(conn) == []


def test_the_gateways_callback_credits_the_same_order_only_once(app, conn, client, diner, gateway) -> None:  # noqa: ANN001
    callbacks = app.test_client()
    gateway.notify = lambda body, sig: callbacks.post(
        "/api/v1/ecny/notify", data=body, headers={"X-Ecny-Signature": sig}
    )
    gateway.add_wallet("W-diner", 50_000)
    before = self_fen(conn)
    order_no = post_form(client, "/me/topup", {"amount": "12.50"}).headers["Location"].rsplit("/", 1)[1]
    qr_text = ecny_topups.get(conn, order_no)["qr_text"]
    gateway.wallet_pays_qr(qr_text, "W-diner")  # the wallet app pays; the gateway calls back
    assert ecny_topups.get(conn, order_no)["status"] == "credited"
    assert self_fen(conn) == before + 1250
    assert "已到账" in text_of(client.get(f"/me/topup/{order_no}"))
    assert self_fen(conn) == before + 1250
    assert all_violations(conn) == []


def test_a_payment_of_another_amount_is_held_not_credited(conn, clock, client, diner, gateway) -> None:  # noqa: ANN001
    from shared.ecny_gateway import GatewayOrder  # noqa: PLC0415

    order_no = post_form(client, "/me/topup", {"amount": "50"}).headers["Location"].rsplit("/", 1)[1]
    before = self_fen(conn)
    with write_txn(conn):
        row = ecny_topups.confirm(conn, GatewayOrder(order_no, 4_000, "paid", "SIMX"), clock.now_ms())
    assert row["status"] == "held" and self_fen(conn) == before
    assert "待人工处理" in text_of(client.get(f"/me/topup/{order_no}"))
    assert all_violations(conn) == []


def test_a_refused_top_up_changes_nothing(conn, clock, client, diner, gateway) -> None:  # noqa: ANN001
    over = post_form(client, "/me/topup", {"amount": "5000.01"})
    assert over.status_code == 400 and 'id="amount-error"' in text_of(over)
    bad = post_form(client, "/me/topup", {"amount": "12.345"})
    assert bad.status_code == 400 and 'id="amount-error"' in text_of(bad)
    assert conn.execute("SELECT count(*) FROM ecny_topups").fetchone()[0] == 0
    assert gateway.orders == {}

    gateway.reachable = False
    down = post_form(client, "/me/topup", {"amount": "20"})
    assert down.status_code == 400 and 'id="amount-error"' in text_of(down)
    assert [r["status"] for r in ecny_topups.of_holder(conn, DINER_HOLDER)] == ["failed"]
    assert self_fen(conn) == ledger.balance(conn, ledger.self_purse(DINER_HOLDER))


def test_without_a_gateway_the_top_up_page_says_so(client, diner) -> None:  # noqa: ANN001
    page = client.get("/me/topup")
    assert page.status_code == 200 and "尚未开通数字人民币充值" in text_of(page)
    assert client.get("/me/topup/TU0/wallet").status_code == 404


def test_there_is_no_wallet_page_without_the_simulated_gateway(app, client, diner, gateway) -> None:  # noqa: ANN001
    order_no = post_form(client, "/me/topup", {"amount": "10"}).headers["Location"].rsplit("/", 1)[1]

    class OtherGateway:
        """Any gateway that is not the simulated one (answering from the simulated one's orders)."""

        name = "other"

        def __getattr__(self, attr: str):  # noqa: ANN204
            return getattr(gateway, attr)

    app.extensions["ecny_gateway"] = OtherGateway()
    page = text_of(client.get(f"/me/topup/{order_no}"))
    assert "/wallet" not in page and "收款码" in page
    assert client.get(f"/me/topup/{order_no}/wallet").status_code == 404


# --- a diner sees only themselves --------------------------------------------------------


def test_a_diner_sees_and_touches_only_themselves(app, conn, clock, client, diner, gateway) -> None:  # noqa: ANN001
    make_diner(conn, OTHER_HOLDER, "U02-0002", clock.now_ms())
    other = app.test_client()
    assert diner_login(other, "U02-0002").status_code == 302
    order_no = post_form(other, "/me/topup", {"amount": "10"}).headers["Location"].rsplit("/", 1)[1]
    theirs = sale(diner, 9, OTHER_CARD, 350, clock.now_ms())
    ingest(conn, clock, diner, theirs)

    name = conn.execute("SELECT name FROM holders WHERE id = ?", (OTHER_HOLDER,)).fetchone()[0]
    for path in ("/me", "/me/pay", "/me/topup", "/me/card", "/me/pin"):
        html = text_of(client.get(path))
        assert name not in html and OTHER_CARD not in html and order_no not in html, path
    assert client.get(f"/me/topup/{order_no}").status_code == 404
    assert post_form(client, f"/me/topup/{order_no}/wallet", {}, page="/me/topup").status_code == 404
    assert ecny_topups.get(conn, order_no)["status"] == "created"
    assert client.get(f"/me/sales/{theirs.uuid}/rate").status_code == 403
    assert client.get(f"/people/{OTHER_HOLDER}").status_code == 403
