"""The snapshot: everything terminals cache, read in one consistent transaction, tagged
with the delta version it includes. A terminal that starts fresh, or missed more deltas than
one catch-up page carries, fetches it over HTTP and then follows the delta log.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from server.books import ledger
from server.books.periods import year_of_ms
from server.downstream.changes import (
    canteen_change,
    card_change,
    face_changes,
    holder_change_from,
    meals_of_day_for_all,
    qr_key_changes,
    settings_change,
)
from server.downstream.deltas import current_version
from shared.protocol import Snapshot


def _last_delta_ms(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(at_ms) FROM deltas").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def build_snapshot(conn: sqlite3.Connection, now_ms: int | None = None) -> Snapshot:
    """Everything terminals cache, read in one consistent transaction; with ``now_ms``,
    each holder's meals of that day too (the meal limit across terminals)."""
    conn.execute("BEGIN")
    try:
        version = current_version(conn)
        changes: list[dict[str, Any]] = []
        settings = conn.execute("SELECT value FROM settings WHERE key = 'terminal_settings'").fetchone()
        changes.append(settings_change(json.loads(settings[0]) if settings else {}))
        for row in conn.execute("SELECT * FROM canteens ORDER BY id"):
            changes.append(canteen_change(row))
        meals = meals_of_day_for_all(conn, now_ms) if now_ms is not None else {}
        # per holder: [this year's subsidy, self, next year's, earlier years'] (the year of now_ms, or
        # of the last delta when none is given)
        year = year_of_ms(now_ms if now_ms is not None else _last_delta_ms(conn))
        slot = {("subsidy", year): 0, ("self", None): 1, ("subsidy", year + 1): 2}
        purses: dict[str, list[int]] = {}
        for row in conn.execute(
            "SELECT id, balance_fen FROM accounts WHERE kind IN ('subsidy_purse', 'self_purse')"
        ):
            holder_id, purse, purse_year = ledger.parse_purse(row[0])
            if (purse, purse_year) in slot:
                purses.setdefault(holder_id, [0, 0, 0, 0])[slot[purse, purse_year]] = row[1]
            elif purse_year is not None and purse_year < year and row[1] > 0:  # expired, not yet cleared
                purses.setdefault(holder_id, [0, 0, 0, 0])[3] += row[1]
        for row in conn.execute("SELECT id, unit_id, blocked FROM holders ORDER BY id"):
            sub, own, nxt, old = purses.get(row[0], [0, 0, 0, 0])
            change = holder_change_from(row[0], row[1], bool(row[2]), sub, own, year, nxt, old)
            if row[0] in meals:
                change["meals"] = meals[row[0]]
            changes.append(change)
        for row in conn.execute("SELECT card_id, holder_id, status FROM cards ORDER BY card_id"):
            changes.append(card_change(row[0], row[1], row[2]))
        changes.extend(face_changes(conn))
        changes.extend(qr_key_changes(conn))
    finally:
        conn.execute("COMMIT")
    return Snapshot(version=version, changes=tuple(changes))
