"""Round 3 of the protocol's fast paths, each pinned to the general form it replaces: the
one-shot ``hmac.digest`` against ``hmac.new(...).hexdigest()`` (every message sent or
opened is signed or verified with it), :func:`shared.ids.uuid4_hex` against
``uuid.uuid4().hex`` (a message id per envelope sealed), and the seals' envelope dict
against :meth:`~shared.protocol.envelope.Envelope.unsigned` — the same bytes on any input."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared import ids
from shared.protocol import envelope, signing


@given(st.binary(max_size=80), st.binary(max_size=3000))
def test_hmac_hex_is_hmac_new_hexdigest(secret: bytes, data: bytes) -> None:
    """Keys longer than SHA-256's block (64 bytes) are hashed first: both forms do it."""
    reference = hmac.new(secret, data, hashlib.sha256).hexdigest()
    assert signing.hmac_sha256_hex(secret, data) == reference
    assert signing.hmac_sign(secret, data) == signing.HMAC_PREFIX + reference
    assert signing.hmac_verify(secret, data, signing.HMAC_PREFIX + reference)


@given(st.binary(max_size=40))
def test_the_broker_password_is_the_hmac_of_its_label(secret: bytes) -> None:
    reference = hmac.new(secret, b"canteen/v1 mqtt password", hashlib.sha256).hexdigest()
    assert signing.broker_password(secret) == reference


@given(st.binary(min_size=16, max_size=16))
def test_uuid4_hex_of_random_bytes_is_uuid4s(raw: bytes) -> None:
    assert ids.uuid4_hex_of(raw) == uuid.UUID(bytes=raw, version=4).hex


def test_uuid4_hex_of_the_extreme_bytes() -> None:
    for raw in (bytes(16), b"\xff" * 16, b"\x0f\xf0" * 8, b"\xf0\x0f" * 8):
        assert ids.uuid4_hex_of(raw) == uuid.UUID(bytes=raw, version=4).hex


def test_uuid4_hex_is_a_fresh_version_4_uuid() -> None:
    made = {ids.uuid4_hex() for _ in range(200)}
    assert len(made) == 200
    for value in made:
        assert re.fullmatch(r"[0-9a-f]{32}", value)
        assert uuid.UUID(hex=value).version == 4
        assert uuid.UUID(hex=value).variant == uuid.RFC_4122


texts = st.text(max_size=40)
bodies = st.dictionaries(st.text(max_size=8), st.none() | st.integers() | texts, max_size=4)


@given(texts, texts, texts, st.integers(0, 2**53), bodies, st.integers(0, 3))
def test_the_seals_envelope_dict_is_the_records_unsigned(
    type_: str, sender: str, msg_id: str, at: int, body: dict[str, Any], version: int
) -> None:
    record = envelope.Envelope(type_, sender, msg_id, at, body, version)
    built = envelope._unsigned(type_, sender, msg_id, at, body, version)
    assert list(built.items()) == list(record.unsigned().items())
    assert (
        envelope._unsigned(type_, sender, msg_id, at, body)
        == envelope.Envelope(type_, sender, msg_id, at, body).unsigned()
    )
