"""The QR payment code format and the qr_key downstream change (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.paycode import PaycodeError, is_fresh, make_code, parse_code, public_key_hex, signature_ok
from shared.protocol import Delta, ProtocolError
from shared.protocol.messages import QrKeyChange

SEED = bytes(range(32))


@given(
    card=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    counter=st.integers(0, 2**53 - 1),
    now_ms=st.integers(0, 4_000_000_000_000),
)
def test_every_code_made_parses_back_and_verifies(card: str, counter: int, now_ms: int) -> None:
    code = parse_code(make_code(SEED, card, counter, now_ms))
    assert (code.card_id, code.counter, code.time_ms) == (card, counter, now_ms - now_ms % 1000)
    assert signature_ok(code, public_key_hex(SEED))
    assert not signature_ok(code, public_key_hex(bytes(32)))


def test_a_code_is_fresh_for_one_minute() -> None:
    code = parse_code(make_code(SEED, "C1", 1, 1_000_000))
    assert is_fresh(code, 1_000_000) and is_fresh(code, 1_060_000)
    assert not is_fresh(code, 1_060_001)
    assert is_fresh(code, 995_000) and not is_fresh(code, 994_999)  # phone clock a little ahead


def test_a_changed_counter_breaks_the_signature() -> None:
    text = make_code(SEED, "C1", 1, 1_000_000)
    forged = parse_code(text.replace(".1.", ".2.", 1))
    assert not signature_ok(forged, public_key_hex(SEED))


@pytest.mark.parametrize("card", ["", "a.b", "卡", "x" * 65])
def test_card_ids_that_cannot_be_in_a_code_are_refused(card: str) -> None:
    with pytest.raises(PaycodeError):
        make_code(SEED, card, 1, 0)


def _delta(change: dict) -> Delta:
    return Delta.from_body({"version": 1, "changes": [change]})


def test_the_qr_key_change_is_validated() -> None:
    good = {
        "kind": "qr_key",
        "holder_id": "H1",
        "public_key": public_key_hex(SEED),
        "expires_at_ms": 5,
        "offline_allowance_fen": 3000,
    }
    delta = _delta(good)
    assert delta.changes == (QrKeyChange("H1", public_key_hex(SEED), 5, 3000),)
    assert delta.to_body()["changes"] == [good]
    for bad in (
        {**good, "public_key": "AB" * 32},
        {**good, "public_key": "ab"},
        {**good, "offline_allowance_fen": -1},
        {**good, "offline_allowance_fen": 1.5},
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "expires_at_ms"},
    ):
        with pytest.raises(ProtocolError):
            _delta(bad)
