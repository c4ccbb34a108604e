"""Money coming in: quarterly subsidy allocations and self top-ups.

Allocation (第九条, 方案 三.3): unit budget → bureau meal-fund account → system income
account → each cardholder's subsidy purse, all in one ledger txn. Self top-up (第十条):
the cardholder's bank → self purse. There is no function that moves money out of a purse
to a person: 不得提现.
"""

from __future__ import annotations

import sqlite3

from server import ledger
from server.downstream import record_delta
from server.holders import holder_change
from server.registry import holder_of_card
from shared.errors import DomainError


def allocate(
    conn: sqlite3.Connection,
    unit_id: str,
    quarter: str,
    per_person_fen: int | None,
    now_ms: int,
) -> dict[str, int]:
    """Credit every active holder of the unit with ``per_person_fen`` (default: the unit's
    quarterly standard). Returns {"holders": n, "total_fen": t}. Once per unit per quarter."""
    unit = conn.execute("SELECT quarterly_standard_fen FROM units WHERE id = ?", (unit_id,)).fetchone()
    if unit is None:
        raise DomainError("not_found", f"unit {unit_id}")
    amount = unit[0] if per_person_fen is None else per_person_fen
    if amount <= 0:
        raise DomainError("invalid_input", "allocation per person must be positive")
    ref = f"{unit_id}/{quarter}"
    if conn.execute("SELECT 1 FROM txns WHERE kind = 'allocation' AND ref = ?", (ref,)).fetchone():
        raise DomainError("already_exists", f"allocation {ref}")
    holders = [r[0] for r in conn.execute("SELECT id FROM holders WHERE unit_id = ? ORDER BY id", (unit_id,))]
    total = amount * len(holders)
    moves = [
        ledger.Move(ledger.unit_budget(unit_id), ledger.BUREAU_MEAL_FUND, total),
        ledger.Move(ledger.BUREAU_MEAL_FUND, ledger.SYSTEM_INCOME, total),
    ] + [ledger.Move(ledger.SYSTEM_INCOME, ledger.subsidy_purse(h), amount) for h in holders]
    ledger.post(conn, "allocation", moves, now_ms, ref=ref)
    record_delta(conn, [holder_change(conn, h) for h in holders], now_ms)
    return {"holders": len(holders), "total_fen": total}


def topup(conn: sqlite3.Connection, card_id: str, amount_fen: int, now_ms: int, ref: str | None = None) -> int:
    """Self top-up onto the card's holder's self purse; returns the new self balance."""
    if amount_fen <= 0:
        raise DomainError("invalid_input", "top-up must be positive")
    card = holder_of_card(conn, card_id)
    holder_id = card["holder_id"]
    ledger.post(
        conn, "topup", [ledger.Move(ledger.BANK_TOPUP, ledger.self_purse(holder_id), amount_fen)],
        now_ms, ref=ref,
    )
    change = holder_change(conn, holder_id)
    record_delta(conn, [change], now_ms)
    return int(change["self_fen"])
