"""Signatures: HMAC-SHA256 per terminal, Ed25519 for what the server broadcasts.

A terminal and the server share the terminal's secret (32 random bytes handed out at
provisioning), so upstream messages and per-terminal acknowledgements use HMAC-SHA256.
Broadcast deltas and snapshots go to every terminal at once; a shared HMAC key would let
any one terminal forge them, so the server signs those with Ed25519 and terminals hold only
the public key.
"""

from __future__ import annotations

import functools
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HMAC_PREFIX = "hmac-sha256:"
ED25519_PREFIX = "ed25519:"


def hmac_sha256_hex(secret: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` under ``secret``, as 64 hex digits: the bytes of
    ``hmac.new(secret, data, hashlib.sha256).hexdigest()``, computed by the one-shot
    ``hmac.digest`` (OpenSSL's HMAC either way: measured no faster on 3.11, one helper for
    both HMAC users; tests/test_protocol_fast_hmac_ids.py pins it to ``hmac.new``)."""
    return hmac.digest(secret, data, "sha256").hex()


def hmac_sign(secret: bytes, data: bytes) -> str:
    return HMAC_PREFIX + hmac_sha256_hex(secret, data)


def terminal_request_bytes(
    terminal_id: str, at_ms: int, nonce: str, method: str, path: str, query: str
) -> bytes:
    """What a terminal signs for an HTTP request to the server: who, when, a fresh nonce
    (the server refuses one it has seen), the method, the path and the raw query string —
    so neither a replay nor a changed ``?since=`` passes."""
    return f"{terminal_id}\n{at_ms}\n{nonce}\n{method.upper()}\n{path}\n{query}".encode()


def hmac_verify(secret: bytes, data: bytes, sig: str) -> bool:
    # compare_digest raises TypeError on non-ASCII str; such a signature is simply wrong
    return sig.isascii() and hmac.compare_digest(hmac_sign(secret, data), sig)


class ServerKey:
    """The server's Ed25519 signing key (private). Serialised as 64 hex chars of seed."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> ServerKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_hex(cls, seed_hex: str) -> ServerKey:
        return cls(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex)))

    def to_hex(self) -> str:
        from cryptography.hazmat.primitives import serialization

        raw = self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return raw.hex()

    @functools.cached_property
    def public_bytes(self) -> bytes:
        """The raw 32 bytes of the public key (as :attr:`ServerVerifier.public_bytes`)."""
        from cryptography.hazmat.primitives import serialization

        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_hex(self) -> str:
        return self.public_bytes.hex()

    def sign(self, data: bytes) -> str:
        return ED25519_PREFIX + self._private.sign(data).hex()


class ServerVerifier:
    """Checks Ed25519 signatures made by :class:`ServerKey` (holds only the public key)."""

    def __init__(self, public_hex: str) -> None:
        self.public_bytes = bytes.fromhex(public_hex)
        self._public = Ed25519PublicKey.from_public_bytes(self.public_bytes)

    def verify(self, data: bytes, sig: str) -> bool:
        if not sig.startswith(ED25519_PREFIX):
            return False
        try:
            self._public.verify(bytes.fromhex(sig[len(ED25519_PREFIX) :]), data)
        except (InvalidSignature, ValueError):
            return False
        return True


def broker_password(secret: bytes) -> str:
    """A terminal's MQTT password, derived from its secret: the terminal needs no second
    credential in its configuration, and the server can rewrite the broker's password file
    from its own table at any time. (Anyone holding the secret is that terminal anyway.)"""
    return hmac_sha256_hex(secret, b"canteen/v1 mqtt password")
