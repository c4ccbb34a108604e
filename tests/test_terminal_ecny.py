"""Digital RMB at the terminal through the simulated gateway: online only, its own method,
no purse touched, and nothing lost when the gateway or the terminal fails mid-way."""

from __future__ import annotations

import pytest

from shared.clock import FakeClock
from shared.ecny_gateway import SimulatedGateway, make_gateway
from shared.errors import DomainError
from terminal.ecny import EcnyCashier
from tests.ident_helpers import offline_terminal


@pytest.fixture
def setup(tmp_path, clock: FakeClock):  # noqa: ANN001, ANN201
    t = offline_terminal(tmp_path, clock)
    gw = SimulatedGateway(clock)
    gw.add_wallet("W1", 5000)
    cashier = EcnyCashier(t, gw, sleep=lambda s: clock.advance_ms(int(s * 1000)), poll_s=1.0)
    yield t, gw, cashier
    cashier.close()
    t.store.close()


def test_a_scanned_wallet_code_pays_the_visitor_price_outside_the_purses(setup) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    decision, sale = cashier.pay_with_code(gw.payment_code("W1"))
    assert decision.approved
    assert (sale.method, sale.card_id, sale.amount_fen, sale.subsidy_fen, sale.self_fen) == (
        "ecny",
        None,
        1500,
        0,
        0,
    )
    assert sale.credential.startswith("ecny:") and sale.meal_period == "lunch"
    assert gw.wallets["W1"].balance_fen == 3500
    assert t.store.card_state("C1").unconfirmed_fen == 0  # no cardholder purse involved
    assert t.display.last.lines[:2] == ("支付成功", "金额 ¥15.00")
    status = t.store.conn.execute("SELECT status FROM ecny_orders").fetchone()[0]
    assert status == "journaled"


def test_offline_the_terminal_says_so_in_chinese_and_offers_the_other_methods(tmp_path, clock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, online=False)
    gw = SimulatedGateway(clock)
    gw.add_wallet("W1", 5000)
    decision, sale = EcnyCashier(t, gw).pay_with_code(gw.payment_code("W1"))
    assert (decision.reason, sale) == ("ecny_offline", None)
    assert t.display.last.lines == ("数字人民币需联网使用", "当前网络离线", "请改用刷卡、扫码或刷脸支付")
    assert gw.orders == {} and gw.wallets["W1"].balance_fen == 5000  # the gateway was not even asked
    assert t.store.conn.execute("SELECT reason FROM declines").fetchone()[0] == "ecny_offline"
    t.store.close()


def test_a_wallet_without_enough_money_is_declined(setup) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    gw.add_wallet("poor", 100)
    decision, sale = cashier.pay_with_code(gw.payment_code("poor"))
    assert (decision.reason, sale) == ("ecny_insufficient_funds", None)
    assert t.display.last.lines == ("数字人民币钱包余额不足",)
    assert t.store.pending_count() == 0


def test_a_used_payment_code_is_declined(setup) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    code = gw.payment_code("W1")
    assert cashier.pay_with_code(code, kind="shop", items=(("water", 1),))[0].approved
    assert cashier.pay_with_code(code, kind="shop", items=(("water", 1),))[0].reason == "ecny_declined"
    assert gw.wallets["W1"].balance_fen == 4800


def test_the_merchant_qr_is_paid_by_the_wallet_app(setup) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    order_no, qr = cashier.start_qr(kind="shop", items=(("water", 2),))
    assert t.display.last.lines[0] == "请用数字人民币App扫码支付" and qr in t.display.last.lines
    gw.wallet_pays_qr(qr, "W1")
    decision, sale = cashier.await_qr(order_no)
    assert decision.approved and sale.amount_fen == 400 and [i.sku for i in sale.items] == ["water"]


def test_an_unpaid_merchant_qr_times_out_and_is_closed(setup, clock) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    order_no, qr = cashier.start_qr(kind="shop", amount_fen=300)
    decision, sale = cashier.await_qr(order_no, timeout_s=0)
    assert (decision.reason, sale) == ("ecny_declined", None)
    assert gw.orders[order_no].status == "closed"
    with pytest.raises(DomainError):  # a closed order cannot be paid any more
        gw.wallet_pays_qr(qr, "W1")


def test_an_unreachable_gateway_is_reported_and_the_other_methods_offered(setup) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    gw.reachable = False
    decision, _ = cashier.pay_with_code("011234567890123456")
    assert decision.reason == "ecny_unavailable"
    assert t.display.last.lines == ("数字人民币通道暂不可用，请改用其他支付方式",)


def test_a_payment_whose_answer_was_lost_is_refunded_on_recovery(setup) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    code = gw.payment_code("W1")
    real_pay = gw.pay_customer_code

    def pay_then_lose_the_answer(order_no: str, customer_code: str):  # noqa: ANN202
        real_pay(order_no, customer_code)
        gw.reachable = False
        raise DomainError("ecny_unavailable", "timeout")

    gw.pay_customer_code = pay_then_lose_the_answer  # type: ignore[method-assign]
    decision, sale = cashier.pay_with_code(code)
    assert (decision.reason, sale) == ("ecny_unavailable", None)
    assert gw.wallets["W1"].balance_fen == 3500  # charged, but the diner was told it failed
    assert cashier.recover()["open"] == 1  # still unreachable: kept for later
    gw.reachable = True
    assert cashier.recover() == {"journaled": 0, "reversed": 1, "failed": 0, "open": 0}
    assert gw.wallets["W1"].balance_fen == 5000
    assert t.store.pending_count() == 0


def test_a_crash_after_journaling_is_not_refunded(setup) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    decision, sale = cashier.pay_with_code(gw.payment_code("W1"))
    t.store.conn.execute("UPDATE ecny_orders SET status = 'paid'")  # as if we died before marking it
    assert cashier.recover()["journaled"] == 1
    assert gw.wallets["W1"].balance_fen == 3500


def test_outside_meal_hours_nothing_is_charged(setup, clock) -> None:  # noqa: ANN001
    t, gw, cashier = setup
    clock.set_ms(clock.now_ms() + 4 * 3_600_000)
    assert cashier.pay_with_code(gw.payment_code("W1"))[0].reason == "outside_meal_hours"
    assert gw.orders == {}


def test_gateways_are_chosen_by_name(clock) -> None:  # noqa: ANN001
    assert isinstance(make_gateway("simulated", clock), SimulatedGateway)
    assert make_gateway("none", clock) is None
    with pytest.raises(ValueError):
        make_gateway("unionpay-real", clock)
