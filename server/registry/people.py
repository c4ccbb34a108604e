"""Cardholders as people see them (API and CLI): purses, cards, status, masked bank account."""

from __future__ import annotations

import sqlite3
from typing import Any

from server.registry import bank_accounts, cards, leavers
from server.registry.holders import holder_change
from shared.errors import DomainError


def get_holder(conn: sqlite3.Connection, holder_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM holders WHERE id = ?", (holder_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"holder {holder_id}")
    return row


def holder_json(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    change = holder_change(conn, row["id"])
    return {
        "id": row["id"],
        "unit_id": row["unit_id"],
        "name": row["name"],
        "staff_no": row["staff_no"],
        "status": row["status"],
        "left_at_ms": row["left_at_ms"],
        "blocked": change["blocked"],
        "subsidy_fen": change["subsidy_fen"],
        "self_fen": change["self_fen"],
        "bank_account": leavers.mask(row["bank_account"]) if row["bank_account"] else None,
        "bank_account_changes": bank_accounts.changes(conn, row["id"]),
        "cards": [
            cards.to_json(c)
            for c in conn.execute(
                "SELECT * FROM cards WHERE holder_id = ? ORDER BY changed_at_ms, card_id", (row["id"],)
            )
        ],
    }
