"""Dynamic QR payment codes at the terminal: verified offline, each used once, short-lived."""

from __future__ import annotations

import pytest

from shared.clock import FakeClock
from shared.paycode import make_code
from shared.protocol.messages import decode_changes
from terminal.authorize import TapRequest
from tests.ident_helpers import QR_SEED, offline_terminal, qr_key_change
from tests.terminal_support import holder_with_card


@pytest.fixture
def terminal(tmp_path, clock: FakeClock):  # noqa: ANN001, ANN201
    t = offline_terminal(tmp_path, clock)
    yield t
    t.store.close()


def qr(terminal, text: str):  # noqa: ANN001, ANN201
    return terminal.tap(TapRequest(None, method="qr", credential=text))


def test_a_fresh_signed_code_pays_from_the_cards_purses(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    code = make_code(QR_SEED, "C1", 1, clock.now_ms())
    decision, sale = qr(terminal, code)
    assert decision.approved and sale is not None
    assert (sale.method, sale.card_id, sale.amount_fen, sale.credential) == ("qr", "C1", 1200, code)
    assert terminal.display.last.lines[0] == "支付成功"


def test_a_code_is_good_only_once_at_a_terminal(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    code = make_code(QR_SEED, "C1", 7, clock.now_ms())
    assert qr(terminal, code)[0].approved
    clock.advance_ms(1000)
    decision, sale = qr(terminal, code)
    assert (decision.reason, sale) == ("qr_reused", None)
    assert terminal.display.last.lines[0] == "付款码已使用，请刷新后重试"


def test_a_declined_code_is_used_up_too(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    clock.set_ms(clock.now_ms() + 3 * 3_600_000)  # 15:00: no meal served
    code = make_code(QR_SEED, "C1", 3, clock.now_ms())
    assert qr(terminal, code)[0].reason == "outside_meal_hours"
    assert qr(terminal, code)[0].reason == "qr_reused"


def test_a_code_older_than_a_minute_is_refused(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    code = make_code(QR_SEED, "C1", 1, clock.now_ms())
    clock.advance_ms(61_000)
    assert qr(terminal, code)[0].reason == "qr_expired"


def test_a_code_from_the_future_is_refused(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    code = make_code(QR_SEED, "C1", 1, clock.now_ms() + 30_000)
    assert qr(terminal, code)[0].reason == "qr_expired"


def test_a_code_signed_with_another_key_is_refused(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    forged = make_code(bytes(32), "C1", 1, clock.now_ms())
    decision, sale = qr(terminal, forged)
    assert (decision.reason, sale) == ("qr_invalid", None)


def test_a_code_whose_card_was_changed_does_not_verify(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    terminal.store.apply_changes(
        2, decode_changes(({"kind": "card", "card_id": "C2", "holder_id": "H1", "status": "active"},))
    )
    code = make_code(QR_SEED, "C1", 1, clock.now_ms()).replace(".C1.", ".C2.")
    assert qr(terminal, code)[0].reason == "qr_invalid"


@pytest.mark.parametrize(
    "text", ["", "hello", "CQ1.C1.1.2.xyz", "CQ1.C1.x.2." + "A" * 86, "https://example.com/"]
)
def test_garbage_is_not_a_payment_code(terminal, text: str) -> None:  # noqa: ANN001
    assert qr(terminal, text)[0].reason == "qr_invalid"


def test_a_revoked_or_expired_credential_no_longer_pays(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    terminal.store.apply_changes(2, decode_changes((qr_key_change(expires_at_ms=clock.now_ms()),)))
    assert qr(terminal, make_code(QR_SEED, "C1", 1, clock.now_ms()))[0].reason == "qr_no_credential"


def test_a_holder_without_a_credential_cannot_pay_by_qr(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    terminal.store.apply_changes(
        2,
        decode_changes(holder_with_card("H2", "C2")),
    )
    assert qr(terminal, make_code(QR_SEED, "C2", 1, clock.now_ms()))[0].reason == "qr_no_credential"


def test_offline_the_credentials_allowance_caps_qr_spending(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, online=False)
    t.store.apply_changes(2, decode_changes((qr_key_change(allowance=1500),)))
    first = t.tap(
        TapRequest(
            None,
            method="qr",
            kind="shop",
            items=(("water", 5),),
            credential=make_code(QR_SEED, "C1", 1, clock.now_ms()),
        )
    )
    assert first[0].approved and first[1].offline  # ¥10.00 of ¥15.00
    second = t.tap(
        TapRequest(
            None,
            method="qr",
            kind="shop",
            items=(("water", 3),),
            credential=make_code(QR_SEED, "C1", 2, clock.now_ms()),
        )
    )
    assert second[0].reason == "offline_limit_reached"  # ¥16.00 > ¥15.00
    third = t.tap(
        TapRequest(
            None,
            method="qr",
            kind="shop",
            items=(("water", 2),),
            credential=make_code(QR_SEED, "C1", 3, clock.now_ms()),
        )
    )
    assert third[0].approved  # exactly ¥14.00
    t.store.close()


def test_online_the_allowance_does_not_apply(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    terminal.store.apply_changes(2, decode_changes((qr_key_change(allowance=100),)))
    assert qr(terminal, make_code(QR_SEED, "C1", 1, clock.now_ms()))[0].approved


def test_a_snapshot_replaces_the_cached_credentials(terminal, clock: FakeClock) -> None:  # noqa: ANN001
    terminal.store.apply_changes(
        5,
        decode_changes(({"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"},)),
        snapshot=True,
    )
    assert qr(terminal, make_code(QR_SEED, "C1", 1, clock.now_ms()))[0].reason == "qr_no_credential"
