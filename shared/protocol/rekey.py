"""A terminal's next key, handed down sealed under its current one (credential rotation).

The server offers a terminal a new 32-byte secret in a :class:`Rekey` body, inside an
Ed25519-signed envelope of type ``rekey`` (on the terminal's own retained topic
``…/t/<id>/down/rekey``, and over HTTP on request). The new secret is encrypted with
AES-256-GCM under a key derived (HKDF-SHA256) from the terminal's *current* secret and bound
to its id, so only the holder of the current key can read it, and a rekey meant for another
terminal or another key does not open. ``key_id`` names a secret without revealing it (the
first 16 hex digits of a hash), so both sides can say which key is in use.

What this protects: a routine rotation, and a key that leaks *later*. What it does not: a
key already stolen opens its own rekey — a terminal whose key is in doubt is revoked and
enrolled again, not rotated.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.protocol.codec import ProtocolError, only_keys, req_str

SECRET_BYTES = 32
_INFO = b"canteen/v1 rekey"


def key_id(secret: bytes) -> str:
    """A public name of a secret: 16 hex digits of a hash that reveals nothing of it."""
    return hashlib.sha256(b"canteen key id\n" + secret).hexdigest()[:16]


def _wrapping_key(current: bytes, terminal_id: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=terminal_id.encode(), info=_INFO)
    return hkdf.derive(current)


@dataclass(frozen=True)
class Rekey:
    """The sealed offer: for ``terminal_id``, the key named ``key_id``, readable with the
    key named ``for_key_id`` (the terminal's current one)."""

    terminal_id: str
    key_id: str
    for_key_id: str
    nonce_hex: str
    sealed_hex: str

    def to_body(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "key_id": self.key_id,
            "for_key_id": self.for_key_id,
            "nonce_hex": self.nonce_hex,
            "sealed_hex": self.sealed_hex,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Rekey:
        only_keys(body, frozenset({"terminal_id", "key_id", "for_key_id", "nonce_hex", "sealed_hex"}), "body")
        return cls(
            terminal_id=req_str(body, "terminal_id", max_len=64),
            key_id=req_str(body, "key_id", max_len=16),
            for_key_id=req_str(body, "for_key_id", max_len=16),
            nonce_hex=req_str(body, "nonce_hex", max_len=24),
            sealed_hex=req_str(body, "sealed_hex", max_len=200),
        )


def seal_key(current: bytes, terminal_id: str, new_secret: bytes) -> Rekey:
    """Seal ``new_secret`` for the holder of ``current``."""
    nonce = os.urandom(12)
    aad = f"{terminal_id}\n{key_id(new_secret)}".encode()
    sealed = AESGCM(_wrapping_key(current, terminal_id)).encrypt(nonce, new_secret, aad)
    return Rekey(terminal_id, key_id(new_secret), key_id(current), nonce.hex(), sealed.hex())


def open_key(current: bytes, terminal_id: str, rekey: Rekey) -> bytes:
    """The new secret in ``rekey``; ProtocolError ``rekey_unreadable`` when it is not for
    this terminal and this key, or was tampered with."""
    if rekey.terminal_id != terminal_id or rekey.for_key_id != key_id(current):
        raise ProtocolError("rekey_unreadable", f"sealed for {rekey.terminal_id}/{rekey.for_key_id}")
    aad = f"{terminal_id}\n{rekey.key_id}".encode()
    try:
        secret = AESGCM(_wrapping_key(current, terminal_id)).decrypt(
            bytes.fromhex(rekey.nonce_hex), bytes.fromhex(rekey.sealed_hex), aad
        )
    except (InvalidTag, ValueError) as exc:
        raise ProtocolError("rekey_unreadable", "the sealed key does not open") from exc
    if len(secret) != SECRET_BYTES or key_id(secret) != rekey.key_id:
        raise ProtocolError("rekey_unreadable", "not a terminal secret")
    return secret
