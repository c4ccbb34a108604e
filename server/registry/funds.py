"""Money coming in: quarterly subsidy allocations and self top-ups.

Allocation (第九条, 方案 三.3): for one unit and one quarter, ``per_person_fen`` (default:
the unit's quarterly standard) × the unit's roster headcount moves unit budget → bureau
meal-fund account (食堂就餐经费专用账户) → system income account (收入专用账户) → each
cardholder's subsidy purse, all in one ledger txn, once per unit and quarter. The
allocation is recorded with its deadline (00:00 on the 11th of the quarter's first month,
Asia/Shanghai) so late and missing allocations show up in :mod:`server.closing.reports`. A quarter
of a year that has already been cleared takes no more allocations (``period_closed``).

Self top-up (第十条): the cardholder's bank → self purse, optionally under an external
reference (the bank's transaction id), which makes a retried top-up harmless. There is no
function that moves money out of a purse to a person: 不得提现.

Both are refused above their ceilings (:mod:`server.registry.ceilings`: by default a
top-up above ¥5,000, an allocation above ¥3,000 per person) with ``amount_above_ceiling``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from server.books import ledger
from server.books.periods import Quarter
from server.downstream.deltas import record_delta
from server.registry import ceilings
from server.registry.holders import holder_change
from server.registry.units import holder_of_card
from shared.amounts import check_amount
from shared.errors import DomainError


def roster(conn: sqlite3.Connection, unit_id: str) -> list[str]:
    """The unit's active cardholders (信息统计表; leavers receive nothing), in id order."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT id FROM holders WHERE unit_id = ? AND status = 'active' ORDER BY id", (unit_id,)
        )
    ]


def allocate(
    conn: sqlite3.Connection,
    unit_id: str,
    quarter: str,
    per_person_fen: int | None,
    now_ms: int,
) -> dict[str, Any]:
    """Credit every holder on the unit's roster; call inside a write txn.

    Returns ``{"unit_id", "quarter", "holders", "per_person_fen", "total_fen", "late"}``.
    """
    q = Quarter.parse(quarter)
    unit = conn.execute("SELECT quarterly_standard_fen FROM units WHERE id = ?", (unit_id,)).fetchone()
    if unit is None:
        raise DomainError("not_found", f"unit {unit_id}")
    amount = check_amount(unit[0] if per_person_fen is None else per_person_fen, "allocation per person")
    ceilings.check(conn, "max_allocation_per_person_fen", amount, "allocation per person")
    if conn.execute("SELECT 1 FROM clearings WHERE year >= ?", (q.year,)).fetchone():
        raise DomainError("period_closed", f"year {q.year} has been cleared; no allocation for {q}")
    ref = f"{unit_id}/{q}"
    if conn.execute(
        "SELECT 1 FROM allocations WHERE unit_id = ? AND quarter = ?", (unit_id, str(q))
    ).fetchone():
        raise DomainError("already_exists", f"allocation {ref}")
    holders = roster(conn, unit_id)
    if not holders:
        raise DomainError(
            "invalid_input", f"unit {unit_id} has nobody on its roster", zh=f"单位 {unit_id} 名册上没有人员"
        )
    total = amount * len(holders)
    moves = [
        ledger.Move(ledger.unit_budget(unit_id), ledger.BUREAU_MEAL_FUND, total),
        ledger.Move(ledger.BUREAU_MEAL_FUND, ledger.SYSTEM_INCOME, total),
    ] + [ledger.Move(ledger.SYSTEM_INCOME, ledger.subsidy_purse(h, q.year), amount) for h in holders]
    txn_id = ledger.post(conn, "allocation", moves, now_ms, ref=ref)
    conn.execute(
        "INSERT INTO allocations(unit_id, quarter, per_person_fen, headcount, total_fen, at_ms, due_ms, "
        "txn_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (unit_id, str(q), amount, len(holders), total, now_ms, q.allocation_due_ms, txn_id),
    )
    record_delta(conn, [holder_change(conn, h, now_ms) for h in holders], now_ms)
    return {
        "unit_id": unit_id,
        "quarter": str(q),
        "holders": len(holders),
        "per_person_fen": amount,
        "total_fen": total,
        "late": now_ms >= q.allocation_due_ms,
    }


def topup(
    conn: sqlite3.Connection, card_id: str, amount_fen: int, now_ms: int, ref: str | None = None
) -> int:
    """Self top-up onto the card's holder's self purse; returns the new self balance.

    A top-up with a ``ref`` already used is refused (``already_exists``) and changes nothing.
    A top-up that brings an overdrawn self purse back to zero or above unblocks the holder.
    """
    check_amount(amount_fen, "top-up")
    ceilings.check(conn, "max_topup_fen", amount_fen, "top-up")
    card = holder_of_card(conn, card_id)
    holder_id = card["holder_id"]
    if (
        ref is not None
        and conn.execute("SELECT 1 FROM txns WHERE kind = 'topup' AND ref = ?", (ref,)).fetchone()
    ):
        raise DomainError("already_exists", f"top-up {ref}")
    ledger.post(
        conn,
        "topup",
        [ledger.Move(ledger.BANK_TOPUP, ledger.self_purse(holder_id), amount_fen)],
        now_ms,
        ref=ref,
    )
    change = holder_change(conn, holder_id, now_ms)
    record_delta(conn, [change], now_ms)
    return int(change["self_fen"])
