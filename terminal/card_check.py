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


# Spend a verified SUN counter if it is above the last one seen of that card, in one
# statement: a first read inserts, a higher counter replaces the last (the counter is spent
# the moment it is accepted, whatever the sale's fate), a counter not above it changes
# nothing and returns no row. Its WHERE is judge's replay rule (``counter <= last`` is
# refused); tests/test_terminal_card_check_fast.py pins the statement to judge on the
# read-then-write it replaced.
_SPEND_COUNTER = (
    "INSERT INTO sun_counters(uid, last_counter, seen_at_ms) VALUES (?, ?, ?) "
    "ON CONFLICT(uid) DO UPDATE SET last_counter = excluded.last_counter, "
    "seen_at_ms = excluded.seen_at_ms "
    "WHERE excluded.last_counter > sun_counters.last_counter "
    "RETURNING last_counter"
)


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
        if isinstance(sun, SunMessage):
            return self._spend(sun, allow_uid_only, now_ms)
        if isinstance(sun, SunError):  # refused whatever was seen before: nothing to read
            return judge(uid_hex, sun, None, allow_uid_only)
        return judge(uid_hex, None, self.last_counter(uid_hex), allow_uid_only)

    def _spend(self, sun: SunMessage, allow_uid_only: bool, now_ms: int) -> CardVerdict:
        """:func:`judge` of a verified message, its counter spent if accepted: one statement
        (:data:`_SPEND_COUNTER`) instead of reading the last counter, then writing. No row
        back: the last counter seen is at or above this one, which judge refuses as this
        counter itself would be; a row: there was none, or a lower one, which judge accepts
        as it would with none."""
        spent = self.conn.execute(_SPEND_COUNTER, (sun.uid_hex, sun.counter, now_ms)).fetchone()
        return judge(sun.uid_hex, sun, None if spent else sun.counter, allow_uid_only)
