"""Which of a terminal's keys the server accepts right now (credential rotation, issue 15).

A terminal has one current secret. While a rotation is under way the server has offered it
a *next* secret (sealed under the current one): a message signed with either is accepted,
and the first one signed with the next key completes the rotation. After that the key
before stays accepted for a grace period, so sales the terminal signed with it and that are
still on their way (in the broker, in a batch resent after a drop) are not lost. One rule,
used by the ingest worker and by the signed HTTP requests alike.
"""

from __future__ import annotations

GRACE_MS = 72 * 3600 * 1000  # the key before the current one is accepted this long after a rotation

CURRENT, NEXT, PREVIOUS = "current", "next", "previous"


def accepted_secrets(
    secret_hex: str,
    next_secret_hex: str | None,
    previous_secret_hex: str | None,
    previous_until_ms: int | None,
    now_ms: int,
) -> list[tuple[str, bytes]]:
    """(which, secret) pairs to try, the current key first."""
    keys = [(CURRENT, bytes.fromhex(secret_hex))]
    if next_secret_hex:
        keys.append((NEXT, bytes.fromhex(next_secret_hex)))
    if previous_secret_hex and previous_until_ms is not None and now_ms <= previous_until_ms:
        keys.append((PREVIOUS, bytes.fromhex(previous_secret_hex)))
    return keys
