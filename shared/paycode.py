"""The dynamic QR payment code (动态付款码): its text, signature and freshness. Pure code.

The server issues each cardholder a signing credential: an Ed25519 key pair, with an expiry
and an offline allowance; terminals receive the public half in the ``qr_key`` downstream
change. The diner's phone shows a code, refreshed often, that says "card, counter, time",
signed with the credential's private key::

    CQ1.<card_id>.<counter>.<unix seconds>.<Ed25519 signature, base64url without padding>

The signature covers ``canteen-qr/1`` and the three fields, each on its own line. A
terminal accepts a code only if the signature verifies under the holder's current key, the
code is at most :data:`VALIDITY_MS` old (and not from the future beyond a small clock
tolerance), and it has not seen the same (holder, counter) before; the server, which sees
every sale's code in its ``credential`` field, catches a code spent at two terminals.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "CQ1"
VALIDITY_MS = 60_000  # a code is good for one minute after it was made
FUTURE_TOLERANCE_MS = 5_000  # phone and terminal clocks may differ this much
MAX_COUNTER = 2**53 - 1
_CARD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DOMAIN = b"canteen-qr/1"


class PaycodeError(ValueError):
    """Not a payment code of ours (malformed)."""


@dataclass(frozen=True)
class PayCode:
    card_id: str
    counter: int
    time_s: int
    signature: bytes
    text: str

    @property
    def time_ms(self) -> int:
        return self.time_s * 1000


def _signed_bytes(card_id: str, counter: int, time_s: int) -> bytes:
    return b"\n".join([_DOMAIN, card_id.encode(), str(counter).encode(), str(time_s).encode()])


def public_key_hex(seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def make_code(seed: bytes, card_id: str, counter: int, now_ms: int) -> str:
    """A signed code for ``card_id`` (the phone, or the server on the phone's behalf)."""
    if not _CARD_ID.match(card_id):
        raise PaycodeError(f"card id {card_id!r} cannot go in a payment code")
    if not 0 <= counter <= MAX_COUNTER:
        raise PaycodeError("counter out of range")
    time_s = now_ms // 1000
    sig = Ed25519PrivateKey.from_private_bytes(seed).sign(_signed_bytes(card_id, counter, time_s))
    return ".".join(
        [PREFIX, card_id, str(counter), str(time_s), base64.urlsafe_b64encode(sig).rstrip(b"=").decode()]
    )


def looks_like_code(text: str) -> bool:
    return text.startswith(PREFIX + ".")


def parse_code(text: str) -> PayCode:
    parts = text.strip().split(".")
    if len(parts) != 5 or parts[0] != PREFIX:
        raise PaycodeError("not a CQ1 payment code")
    _, card_id, counter, time_s, sig = parts
    if not _CARD_ID.match(card_id):
        raise PaycodeError("bad card id")
    if not (counter.isdigit() and time_s.isdigit()) or len(counter) > 16 or len(time_s) > 12:
        raise PaycodeError("bad counter or time")
    try:
        signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (ValueError, TypeError) as exc:
        raise PaycodeError("bad signature encoding") from exc
    if len(signature) != 64:
        raise PaycodeError("bad signature length")
    return PayCode(card_id, int(counter), int(time_s), signature, text.strip())


def signature_ok(code: PayCode, public_hex: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        key.verify(code.signature, _signed_bytes(code.card_id, code.counter, code.time_s))
    except (InvalidSignature, ValueError):
        return False
    return True


def is_fresh(code: PayCode, now_ms: int) -> bool:
    """Made no more than a minute ago, and not (much) in the future."""
    return -FUTURE_TOLERANCE_MS <= now_ms - code.time_ms <= VALIDITY_MS
