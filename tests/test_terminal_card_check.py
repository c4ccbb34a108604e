"""NFC cards at the terminal: NTAG 424 SUN messages are checked offline, a replayed message
or a bare UID of a SUN card is refused, and UID-only cards are a canteen's choice."""

from __future__ import annotations

import pytest

from hardware.ntag424 import SunKeys, make_url
from shared.clock import FakeClock
from shared.protocol.messages import decode_changes
from terminal.authorize import TapRequest
from terminal.card_check import judge
from tests.ident_helpers import CANTEEN, offline_terminal

MASTER = bytes(range(32))
KEYS = SunKeys.from_master(MASTER)
UID = bytes.fromhex("04A1B2C3D4E5F6")
CARD = UID.hex().upper()
BASE = "https://canteen.example/c"


@pytest.fixture
def terminal(tmp_path, clock: FakeClock):  # noqa: ANN001, ANN201
    t = offline_terminal(tmp_path, clock, sun_master_key_hex=MASTER.hex())
    t.store.apply_changes(
        2, decode_changes(({"kind": "card", "card_id": CARD, "holder_id": "H1", "status": "active"},))
    )
    yield t
    t.store.close()


def tap(terminal, uid: str, url: str | None = None):  # noqa: ANN001, ANN201
    return terminal.tap(TapRequest(uid, method="card", credential=url))


def test_a_genuine_sun_card_pays_and_its_counter_goes_with_the_sale(terminal) -> None:  # noqa: ANN001
    decision, sale = tap(terminal, "08112233", make_url(BASE, KEYS, UID, 5))  # random anti-collision id
    assert decision.approved
    assert (sale.card_id, sale.credential) == (CARD, f"sun:{CARD}:5")


def test_a_replayed_sun_message_is_refused(terminal) -> None:  # noqa: ANN001
    url = make_url(BASE, KEYS, UID, 5)
    assert tap(terminal, CARD, url)[0].approved
    decision, sale = tap(terminal, CARD, url)
    assert (decision.reason, sale) == ("card_replayed", None)
    assert terminal.display.last.lines[0] == "卡片验证失败（疑似复制卡）"


def test_an_older_counter_is_refused_and_a_newer_one_accepted(terminal) -> None:  # noqa: ANN001
    terminal.store.apply_changes(
        3, decode_changes(({"kind": "canteen", "canteen_id": "C01", "config": {**CANTEEN, "meal_limit": 5}},))
    )
    assert tap(terminal, CARD, make_url(BASE, KEYS, UID, 10))[0].approved
    assert tap(terminal, CARD, make_url(BASE, KEYS, UID, 9))[0].reason == "card_replayed"
    assert tap(terminal, CARD, make_url(BASE, KEYS, UID, 11))[0].approved


def test_a_forged_mac_is_refused(terminal) -> None:  # noqa: ANN001
    url = make_url(BASE, KEYS, UID, 5)
    forged = url[:-2] + ("00" if not url.endswith("00") else "11")
    assert tap(terminal, CARD, forged)[0].reason == "card_auth_failed"


def test_a_message_made_with_another_citys_keys_is_refused(terminal) -> None:  # noqa: ANN001
    other = SunKeys.from_master(b"\xff" * 32)
    assert tap(terminal, CARD, make_url(BASE, other, UID, 5))[0].reason == "card_auth_failed"


def test_the_bare_uid_of_a_card_that_proved_itself_is_a_clone(terminal) -> None:  # noqa: ANN001
    assert tap(terminal, CARD, make_url(BASE, KEYS, UID, 1))[0].approved
    assert tap(terminal, CARD, None)[0].reason == "card_replayed"


def test_uid_only_cards_pay_where_the_canteen_allows_them(terminal) -> None:  # noqa: ANN001
    assert tap(terminal, "C1")[0].approved  # allow_uid_only defaults to true


def test_uid_only_cards_are_refused_where_the_canteen_forbids_them(terminal) -> None:  # noqa: ANN001
    terminal.store.apply_changes(
        3,
        decode_changes(
            ({"kind": "canteen", "canteen_id": "C01", "config": {**CANTEEN, "allow_uid_only": False}},)
        ),
    )
    decision, sale = tap(terminal, "C1")
    assert (decision.reason, sale) == ("card_not_secure", None)
    assert tap(terminal, CARD, make_url(BASE, KEYS, UID, 1))[0].approved  # a SUN card still pays


def test_without_keys_the_terminal_treats_sun_cards_as_uid_only(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock)
    t.store.apply_changes(
        2, decode_changes(({"kind": "card", "card_id": CARD, "holder_id": "H1", "status": "active"},))
    )
    decision, sale = t.tap(TapRequest(CARD, credential=make_url(BASE, KEYS, UID, 1)))
    assert decision.approved and sale.credential is None
    t.store.close()


def test_the_rule_refuses_an_equal_counter() -> None:
    from hardware.ntag424 import SunMessage

    assert judge(CARD, SunMessage(CARD, 4), 4, True).reason == "card_replayed"
    assert judge(CARD, SunMessage(CARD, 5), 4, False).reason is None


def test_a_sun_operator_card_shows_the_days_totals_and_is_not_charged(terminal) -> None:  # noqa: ANN001
    # the card's real UID (from its SUN message) is on the canteen's operator list; the reader
    # saw a random anti-collision id
    terminal.store.apply_changes(
        3,
        decode_changes(
            ({"kind": "canteen", "canteen_id": "C01", "config": {**CANTEEN, "operator_cards": [CARD]}},)
        ),
    )
    decision, sale = tap(terminal, "08112233", make_url(BASE, KEYS, UID, 5))
    assert (decision.reason, sale) == ("operator_card", None)
    assert terminal.store.pending_count() == 0 and terminal.display.last.tone == "info"


def test_a_qr_credentials_offline_allowance_caps_offline_spending(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    from shared.paycode import make_code
    from tests.ident_helpers import QR_SEED, qr_key_change

    t = offline_terminal(tmp_path, clock, online=False)
    t.store.apply_changes(2, decode_changes((qr_key_change(allowance=1000),)))  # a lunch costs ¥12.00
    decision, sale = t.tap(
        TapRequest(None, method="qr", credential=make_code(QR_SEED, "C1", 1, clock.now_ms()))
    )
    assert (decision.reason, sale) == ("offline_limit_reached", None)
    t.store.apply_changes(3, decode_changes((qr_key_change(allowance=3000),)))
    decision, sale = t.tap(
        TapRequest(None, method="qr", credential=make_code(QR_SEED, "C1", 2, clock.now_ms()))
    )
    assert decision.approved and sale.offline and sale.card_id == "C1"
    t.store.close()
