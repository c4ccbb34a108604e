"""Opening an HMAC envelope that a seal of this process made, or that opened before, skips
re-encoding it and computing its HMAC (``envelope._verified_hmac``): the verdict — the
envelope, or the refusal and its code — is the full check's for any message, secret, size
bound and expected type, whether the bytes were sealed whole or with a spliced body."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.protocol import envelope
from shared.protocol.codec import ProtocolError, canonical_json
from shared.protocol.envelope import open_envelope, seal_hmac, seal_hmac_body_json

MANY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
senders = st.sampled_from(["T1", "server", "bad id", "", "x" * 40])
types = st.sampled_from(["ack", "sale_batch", "status", "nonsense"])
secrets = st.sampled_from([b"k" * 32, b"other-secret-of-32-bytes-long!!!"])


def outcome(data: bytes, secret_for: Any, expect_type: str | None, max_bytes: int) -> Any:
    try:
        env = open_envelope(data, secret_for=secret_for, expect_type=expect_type, max_bytes=max_bytes)
    except ProtocolError as exc:
        return ("refused", exc.code)
    return ("ok", env)


@MANY
@given(
    types,
    senders,
    st.text(max_size=70),
    bodies,
    st.integers(-5, 2**54),
    secrets,
    secrets,
    st.booleans(),
    st.sampled_from([None, "ack", "status"]),
    st.sampled_from([200, 1_048_576]),
    st.booleans(),
)
def test_a_remembered_message_opens_as_the_full_check_opens_it(
    type_: str,
    sender: str,
    msg_id: str,
    body: dict[str, Any],
    at: int,
    sealed_with: bytes,
    opened_with: bytes,
    spliced: bool,
    expect_type: str | None,
    max_bytes: int,
    known: bool,
) -> None:
    try:
        if spliced:
            data = seal_hmac_body_json(type_, sender, canonical_json(body), sealed_with, at, msg_id or None)
        else:
            data = seal_hmac(type_, sender, body, sealed_with, at, msg_id or None)
    except ProtocolError:
        assume(False)  # a body that cannot be sealed (a lone surrogate): nothing to open
    calls: list[str] = []

    def secret_for(s: str) -> bytes | None:
        calls.append(s)
        return opened_with if known else None

    for copy in (data, data.replace(b'"sent_at_ms":', b'"sent_at_ms":1', 1)):  # and a tampered one
        remembered = outcome(copy, secret_for, expect_type, max_bytes)
        opened_again = outcome(copy, secret_for, expect_type, max_bytes)  # remembered if it opened
        envelope._verified_hmac.clear()
        full = outcome(copy, secret_for, expect_type, max_bytes)
        assert remembered == opened_again == full
        assert len(calls) <= 3  # the key looked up once per opening, if at all
        calls.clear()


def test_the_memo_is_taken_only_with_the_sealing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is real (no HMAC computed on a hit) and keyed by the secret."""
    computed: list[bytes] = []
    real = envelope.hmac_verify

    def counting(secret: bytes, data: bytes, sig: str) -> bool:
        computed.append(secret)
        return real(secret, data, sig)

    monkeypatch.setattr(envelope, "hmac_verify", counting)
    secret, other = b"s" * 32, b"t" * 32
    data = seal_hmac("ack", "server", {"in_reply_to": "m", "results": [], "reason": None}, secret, 5)
    env = open_envelope(data, secret_for=lambda s: secret)
    assert computed == []  # sealed here: remembered
    with pytest.raises(ProtocolError) as err:
        open_envelope(data, secret_for=lambda s: other)
    assert (err.value.code, computed) == ("bad_signature", [other])
    envelope._verified_hmac.clear()
    assert open_envelope(data, secret_for=lambda s: secret) == env
    assert computed == [other, secret]
    assert open_envelope(data, secret_for=lambda s: secret) == env  # opened: remembered again
    assert computed == [other, secret]
    with pytest.raises(ProtocolError) as err:  # the size bound still applies to a remembered message
        open_envelope(data, secret_for=lambda s: secret, max_bytes=len(data) - 1)
    assert err.value.code == "too_large"
    with pytest.raises(ProtocolError) as err:
        open_envelope(data, secret_for=lambda s: None)
    assert err.value.code == "unknown_terminal"
