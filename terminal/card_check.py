"""Is this NFC tap a genuine card? The SUN check and the UID-only policy, at the terminal.

A UID alone can be cloned. An NTAG 424 DNA card personalised for SUN proves itself on every
read with a MAC over its UID and a read counter (:mod:`hardware.ntag424`); the terminal
checks the MAC offline and that the counter went up since the last read it saw of that card
(a recorded message played back has an old counter). The rules, in :func:`judge`:

* a SUN message that does not verify → ``card_auth_failed``;
* a verified message whose counter is not above the last one seen here → ``card_replayed``;
* a tap with no SUN message from a card this terminal has seen prove itself before (a clone
  of a SUN card's UID) → ``card_replayed``;
* any other UID-only tap → allowed only if the canteen allows UID-only cards
  (``allow_uid_only`` in its config), else ``card_not_secure``.

When the terminal has no SUN keys configured it cannot check messages and treats every
card as UID-only. The card id of a SUN card is its real UID from the message (the
anti-collision UID may be random).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hardware.ntag424 import SunError, SunKeys, SunMessage, verify_url


@dataclass(frozen=True)
class CardVerdict:
    card_id: str
    reason: str | None = None  # None: the card may pay
    counter: int | None = None  # the verified SUN counter

    @property
    def credential(self) -> str | None:
        """What goes into the sale's ``credential`` (the server catches a counter used twice)."""
        return f"sun:{self.card_id}:{self.counter}" if self.counter is not None else None


def judge(
    uid_hex: str,
    sun: SunMessage | SunError | None,
    last_counter: int | None,
    allow_uid_only: bool,
) -> CardVerdict:
    """The rule (pure). ``sun``: the verified message, the verification error, or None if the
    card sent none; ``last_counter``: the last verified counter seen here for that card."""
    if isinstance(sun, SunError):
        return CardVerdict(uid_hex, "card_auth_failed")
    if sun is not None:
        if last_counter is not None and sun.counter <= last_counter:
            return CardVerdict(sun.uid_hex, "card_replayed", sun.counter)
        return CardVerdict(sun.uid_hex, None, sun.counter)
    if last_counter is not None:
        return CardVerdict(uid_hex, "card_replayed")
    return CardVerdict(uid_hex, None if allow_uid_only else "card_not_secure")


class CardChecker:
    """Applies :func:`judge` with this terminal's keys and its memory of SUN counters."""

    def __init__(self, conn: sqlite3.Connection, keys: SunKeys | None) -> None:
        self.conn = conn
        self.keys = keys

    def last_counter(self, uid_hex: str) -> int | None:
        row = self.conn.execute("SELECT last_counter FROM sun_counters WHERE uid = ?", (uid_hex,)).fetchone()
        return int(row[0]) if row else None

    def check(self, uid_hex: str, sun_url: str | None, allow_uid_only: bool, now_ms: int) -> CardVerdict:
        sun: SunMessage | SunError | None = None
        if sun_url and self.keys is not None:
            try:
                sun = verify_url(self.keys, sun_url)
            except SunError as exc:
                sun = exc
        uid = sun.uid_hex if isinstance(sun, SunMessage) else uid_hex
        verdict = judge(uid, sun, self.last_counter(uid), allow_uid_only)
        if verdict.reason is None and verdict.counter is not None:
            # the counter is spent the moment it is accepted, whatever the sale's fate
            self.conn.execute(
                "INSERT INTO sun_counters(uid, last_counter, seen_at_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(uid) DO UPDATE SET last_counter = excluded.last_counter, "
                "seen_at_ms = excluded.seen_at_ms",
                (verdict.card_id, verdict.counter, now_ms),
            )
        return verdict
