"""Six-digit PINs and their salted scrypt hashes: one definition for server and terminal.

The cardholder's payment PIN (checked online by the server, :mod:`server.registry.pins`) and
the canteen operator's PIN (checked offline by the terminal before a reversal, 冲正) are
both six digits, not trivially guessable (:func:`check_pin_format`), and stored only as a
salted scrypt hash (``hashlib.scrypt``, standard library: memory-hard and slow, so a copied
database or terminal cache does not give PINs away cheaply; six digits are a small space, so
lockouts remain the main defence). Compared in constant time.

An operator's PIN travels to the terminals inside the canteen's config as one text record,
``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`` (:func:`pin_record`, :func:`verify_pin_record`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from shared.errors import DomainError

PIN_LENGTH = 6
# scrypt cost: 16 MiB and ~50 ms per check on a server core; stored with each hash so it
# can be raised later without invalidating existing PINs
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
_MAXMEM = 64 * 2**20


def check_pin_format(pin: object, invalid: str = "pin_invalid", too_simple: str = "pin_too_simple") -> str:
    """The PIN if it is six digits and not trivially guessable; DomainError (``invalid`` /
    ``too_simple``) otherwise."""
    if not isinstance(pin, str) or len(pin) != PIN_LENGTH or not pin.isascii() or not pin.isdigit():
        raise DomainError(invalid, "a PIN is exactly 6 digits")
    steps = {int(b) - int(a) for a, b in zip(pin, pin[1:], strict=False)}
    if steps in ({0}, {1}, {-1}):
        raise DomainError(too_simple, "all digits the same, or an ascending/descending run")
    return pin


def hash_pin(pin: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_LEN, maxmem=_MAXMEM)


def pin_record(pin: str, salt: bytes | None = None) -> str:
    """The one-line record of a PIN's hash (a fresh random salt unless given)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hash_pin(pin, salt)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def is_pin_record(record: object) -> bool:
    """Whether ``record`` has the shape of :func:`pin_record`'s output (parameters in range)."""
    try:
        _parse_record(record)
    except ValueError:
        return False
    return True


def verify_pin_record(record: str, pin: object) -> bool:
    """Whether ``pin`` matches the record. A malformed PIN is hashed too (no early answer
    tells it apart from a wrong one); a malformed record matches nothing."""
    try:
        n, r, p, salt, digest = _parse_record(record)
    except ValueError:
        return False
    candidate = hash_pin(pin if isinstance(pin, str) else "", salt, n, r, p)
    return hmac.compare_digest(candidate, digest)


def _parse_record(record: object) -> tuple[int, int, int, bytes, bytes]:
    if not isinstance(record, str):
        raise ValueError("not a text")
    parts = record.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a scrypt record")
    n, r, p = (int(x) for x in parts[1:4])
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    if not 8 <= len(salt) <= 64 or len(digest) != SCRYPT_LEN:
        raise ValueError("salt or hash of the wrong size")
    return n, r, p, salt, digest
