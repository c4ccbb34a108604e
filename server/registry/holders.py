"""Cardholders as the terminals see them: purses, blocked flag, and the change records.

A holder is blocked when an administrator blocked them, or — derived, never stored —
while an offline overdraft is uncovered (self purse below zero). A top-up that brings the
self purse back to zero or above unblocks them with no further step. Cards point at
holders, so a replacement card keeps both purses.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from server.books import ledger
from server.books.periods import year_of_ms
from server.downstream.changes import holder_change_from


def holder_change(conn: sqlite3.Connection, holder_id: str, now_ms: int) -> dict[str, Any]:
    """The downstream 'holder' change for one cardholder, read inside the current txn: the
    subsidy of the year it is at ``now_ms`` and of the next year, and the self purse."""
    row = conn.execute("SELECT unit_id, blocked FROM holders WHERE id = ?", (holder_id,)).fetchone()
    year = year_of_ms(now_ms)
    by_year = ledger.subsidy_by_year(conn, holder_id)
    expired = sum(fen for y, fen in by_year.items() if y < year and fen > 0)
    own = ledger.balance(conn, ledger.self_purse(holder_id))
    return holder_change_from(
        holder_id,
        row["unit_id"],
        bool(row["blocked"]),
        by_year.get(year, 0),
        own,
        year,
        by_year.get(year + 1, 0),
        expired,
    )
