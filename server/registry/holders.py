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
from server.downstream.changes import holder_change_from


def holder_change(conn: sqlite3.Connection, holder_id: str) -> dict[str, Any]:
    """The downstream 'holder' change for one cardholder, read inside the current txn."""
    row = conn.execute("SELECT unit_id, blocked FROM holders WHERE id = ?", (holder_id,)).fetchone()
    b = ledger.balances(conn, [ledger.subsidy_purse(holder_id), ledger.self_purse(holder_id)])
    return holder_change_from(
        holder_id,
        row["unit_id"],
        bool(row["blocked"]),
        b[ledger.subsidy_purse(holder_id)],
        b[ledger.self_purse(holder_id)],
    )
