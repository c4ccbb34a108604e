"""Changes of a cardholder's own bank account — the only place a refund may go — logged:
who (the token's role, scope and identity), when, the old and new account masked.

A refund to an account changed within ``refund_second_approval_days`` needs two
administrators (:func:`server.registry.leavers.approve_refund`), and both see this history.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def mask(account: str) -> str:
    """'6217003320001234567' → '6217 **** 4567' (lists and logs never show the whole number)."""
    return f"{account[:4]} **** {account[-4:]}"


def record_change(
    conn: sqlite3.Connection, holder_id: str, old: str | None, new: str, changed_by: str, at_ms: int
) -> None:
    """Log one change (call in the write txn that makes it); setting the same account again
    is no change and is not logged."""
    if old == new:
        return
    conn.execute(
        "INSERT INTO bank_account_changes(holder_id, at_ms, changed_by, old_masked, new_masked) "
        "VALUES (?, ?, ?, ?, ?)",
        (holder_id, at_ms, changed_by, mask(old) if old else None, mask(new)),
    )


def changes(conn: sqlite3.Connection, holder_id: str, since_ms: int | None = None) -> list[dict[str, Any]]:
    """The holder's account changes, oldest first (only those at or after ``since_ms``)."""
    return [
        dict(r)
        for r in conn.execute(
            "SELECT at_ms, changed_by, old_masked, new_masked FROM bank_account_changes "
            "WHERE holder_id = ? AND at_ms >= ? ORDER BY at_ms, id",
            (holder_id, since_ms if since_ms is not None else -(2**62)),
        )
    ]
