"""Canteen operators as payees: who is paid a canteen's settlement, and to which account.

Keyed by the operator name stored in ``canteens.operator`` (what the units report, 方案
附件). A canteen with no operator name is paid to its own unit (a self-operated canteen
run by the unit's service centre): its payee is the unit's name. The payout file needs
the company's full name, its bank and its account number; a payee without an account is
still settled (the ledger says what is owed) and the statement flags it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from shared.errors import DomainError

FIELDS = ("company_name", "bank_name", "bank_account", "contact", "phone")


def set_operator(conn: sqlite3.Connection, name: str, **fields: str) -> dict[str, Any]:
    """Create or update a payee (call inside a write txn). Unknown fields are refused."""
    if not isinstance(name, str) or not name.strip() or ":" in name or len(name) > 100:
        raise DomainError(
            "invalid_input",
            "operator name: 1..100 characters, no ':'",
            zh="经营者名称须为 1 到 100 个字，不含“:”",
        )
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise DomainError("invalid_input", f"unknown operator fields: {sorted(unknown)}")
    for key, value in fields.items():
        if not isinstance(value, str) or len(value) > 200:
            raise DomainError(
                "invalid_input", f"{key}: text of at most 200 characters", zh=f"{key} 不超过 200 个字"
            )
    name = name.strip()
    conn.execute("INSERT OR IGNORE INTO operators(name) VALUES (?)", (name,))
    for key, value in fields.items():
        conn.execute(
            f"UPDATE operators SET {key} = ? WHERE name = ?", (value.strip(), name)
        )  # key is one of FIELDS
    return payee(conn, name)


def payee(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM operators WHERE name = ?", (name,)).fetchone()
    data = {"name": name, **dict.fromkeys(FIELDS, "")}
    if row is not None:
        data.update({k: row[k] for k in FIELDS})
    data["company_name"] = data["company_name"] or name
    return data


def payee_name(canteen: sqlite3.Row, unit_name: str) -> str:
    """Who is paid for a canteen: its operator, or its own unit when none is named."""
    return canteen["operator"] or unit_name


def list_operators(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    names = {r[0] for r in conn.execute("SELECT name FROM operators")}
    names |= {r[0] for r in conn.execute("SELECT DISTINCT operator FROM canteens WHERE operator <> ''")}
    return [payee(conn, n) | {"canteens": _canteens_of(conn, n)} for n in sorted(names)]


def _canteens_of(conn: sqlite3.Connection, name: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM canteens WHERE operator = ? ORDER BY id", (name,))]
