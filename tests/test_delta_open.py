"""Opening a published delta once per process (shared.protocol.delta_open): the second
opening gives what the full check gives, and only for the very same bytes and key."""

from __future__ import annotations

import pytest

from shared.protocol import Delta, ProtocolError, ServerKey, ServerVerifier, seal_server
from shared.protocol.delta_open import _opened_deltas, open_delta
from shared.protocol.envelope import _opened_broadcasts
from shared.protocol.messages import CardChange

T0 = 1_767_672_000_000
KEY = ServerKey.from_hex("11" * 32)
VERIFIER = ServerVerifier(KEY.public_hex)
GOOD = {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"}
BAD = {"kind": "card", "card_id": "C2", "holder_id": "H2", "status": 7}  # not a string


def _delta_bytes(changes: list[dict]) -> bytes:
    return seal_server("delta", {"version": 5, "changes": changes}, KEY, T0, "m1")


def test_a_delta_opened_again_is_the_same_delta_with_the_same_faults() -> None:
    data = _delta_bytes([GOOD, BAD])
    first, first_faults = open_delta(data, VERIFIER)
    assert first == Delta(5, (CardChange("C1", "H1", "active"),))
    assert [f.code for f in first_faults] == ["bad_field"]
    again, again_faults = open_delta(data, VERIFIER)
    assert again == first and [str(f) for f in again_faults] == [str(f) for f in first_faults]
    again_faults.clear()  # each opener its own list: clearing it changes no other's
    assert len(open_delta(data, VERIFIER)[1]) == 1
    _opened_deltas.clear()
    _opened_broadcasts.clear()
    checked, checked_faults = open_delta(data, VERIFIER)  # in full: the same verdict
    assert checked == first and len(checked_faults) == 1


def test_a_remembered_delta_is_refused_under_another_key_or_when_changed() -> None:
    data = _delta_bytes([GOOD])
    open_delta(data, VERIFIER)
    with pytest.raises(ProtocolError) as err:
        open_delta(data, ServerVerifier(ServerKey.generate().public_hex))
    assert err.value.code == "bad_signature"
    changed = data.replace(b'"C1"', b'"C9"')
    assert changed != data
    with pytest.raises(ProtocolError) as err:
        open_delta(changed, VERIFIER)
    assert err.value.code == "bad_signature"


def test_a_refused_delta_is_not_remembered() -> None:
    other = ServerKey.generate()
    data = seal_server("delta", {"version": 5, "changes": [GOOD]}, other, T0, "m2")
    for _ in range(2):
        with pytest.raises(ProtocolError) as err:
            open_delta(data, VERIFIER)
        assert err.value.code == "bad_signature"
    assert (VERIFIER.public_bytes, data) not in _opened_deltas


def test_the_memo_is_bounded() -> None:
    _opened_deltas.clear()
    for i in range(_opened_deltas.max_entries + 10):
        data = seal_server("delta", {"version": i + 1, "changes": []}, KEY, T0, f"m{i}")
        assert open_delta(data, VERIFIER)[0].version == i + 1
    assert len(_opened_deltas) == _opened_deltas.max_entries
