"""One-time enrolment codes: short, typeable, checked the same way on both sides.

A code is 16 characters of Crockford's base32 (``0-9`` and ``A-Z`` without ``I L O U``: 80
random bits) shown in four groups of four, ``7KQM-2XPA-9D4T-HW3R``. Typed back it is read
forgivingly — case, spaces and hyphens do not matter, and ``I``/``L`` are read as ``1``,
``O`` as ``0`` — so what reaches the server is the canonical form, and only its SHA-256 is
stored there. Pure: the randomness is passed in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 16
GROUP = 4
_READ_AS = {"I": "1", "L": "1", "O": "0"}


def new_code(choice: Callable[[str], str] = secrets.choice) -> str:
    """A fresh code in its canonical form (no hyphens)."""
    return "".join(choice(ALPHABET) for _ in range(LENGTH))


def display(code: str) -> str:
    """``7KQM2XPA9D4THW3R`` → ``7KQM-2XPA-9D4T-HW3R``."""
    return "-".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))


def canonical(typed: str) -> str | None:
    """The canonical code a person typed, or None when it cannot be one (wrong length or a
    character outside the alphabet) — a typo caught before anything is asked of the server."""
    text = "".join(c for c in typed.upper() if c not in " -\t")
    text = "".join(_READ_AS.get(c, c) for c in text)
    if len(text) != LENGTH or any(c not in ALPHABET for c in text):
        return None
    return text


def code_hash(code: str) -> str:
    """What the server stores of a canonical code (80 random bits: a plain hash suffices)."""
    return hashlib.sha256(b"canteen enrolment\n" + code.encode()).hexdigest()
