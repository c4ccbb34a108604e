"""Cardholders as people see them (API and CLI): purses, cards, status, masked bank account."""

from __future__ import annotations

import sqlite3
from typing import Any

from server.books import ledger
from server.downstream.changes import holder_blocked
from server.infra.db import like_contains
from server.registry import bank_accounts, cards, leavers
from shared.errors import DomainError


def get_holder(conn: sqlite3.Connection, holder_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM holders WHERE id = ?", (holder_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"holder {holder_id}")
    return row


def find_holders(conn: sqlite3.Connection, text: str, unit_id: str | None = None) -> list[sqlite3.Row]:
    """Cardholders whose name contains ``text``, or whose 工号, id or any card number is
    ``text`` (ignoring case), optionally of one unit; by unit and 工号."""
    needle = text.strip()
    if not needle:
        raise DomainError("invalid_input", "give a name, 工号 or card number", zh="请给出姓名、工号或卡号")
    like = like_contains(needle)
    return conn.execute(
        "SELECT * FROM holders h WHERE (? IS NULL OR h.unit_id = ?) AND ("
        "h.name LIKE ? ESCAPE '\\' OR h.staff_no = ? COLLATE NOCASE OR h.id = ? COLLATE NOCASE "
        "OR EXISTS (SELECT 1 FROM cards c WHERE c.holder_id = h.id AND c.card_id = ? COLLATE NOCASE)"
        ") ORDER BY h.unit_id, h.staff_no",
        (unit_id, unit_id, like, needle, needle, needle),
    ).fetchall()


def resolve_holder(conn: sqlite3.Connection, ref: str, unit_id: str | None = None) -> sqlite3.Row:
    """The one cardholder ``ref`` names: a holder id, a card number (any of their cards) or
    a 工号 (unique, or made unique by ``unit_id``)."""
    row = conn.execute("SELECT * FROM holders WHERE id = ?", (ref,)).fetchone()
    if row is not None and unit_id in (None, row["unit_id"]):
        return row
    by_card = conn.execute(
        "SELECT h.* FROM holders h JOIN cards c ON c.holder_id = h.id WHERE c.card_id = ? COLLATE NOCASE "
        "AND (? IS NULL OR h.unit_id = ?)",
        (ref, unit_id, unit_id),
    ).fetchone()
    if by_card is not None:
        return by_card
    by_staff_no = conn.execute(
        "SELECT * FROM holders WHERE staff_no = ? AND (? IS NULL OR unit_id = ?) ORDER BY unit_id",
        (ref, unit_id, unit_id),
    ).fetchall()
    if len(by_staff_no) == 1:
        return by_staff_no[0]
    if len(by_staff_no) > 1:
        units = ", ".join(r["unit_id"] for r in by_staff_no)
        raise DomainError(
            "invalid_input",
            f"工号 {ref} is used in several units ({units}): add --unit",
            zh=f"工号 {ref} 在多个单位中都有（{units}），请加 --unit 指定单位",
        )
    raise DomainError(
        "not_found",
        f"no cardholder with id, card number or 工号 {ref!r}",
        zh=f"没有编号、卡号或工号为“{ref}”的持卡人（可用 holder find 按姓名查找）",
    )


def holder_json(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    self_fen = ledger.balance(conn, ledger.self_purse(row["id"]))
    by_year = ledger.subsidy_by_year(conn, row["id"])
    return {
        "id": row["id"],
        "unit_id": row["unit_id"],
        "name": row["name"],
        "staff_no": row["staff_no"],
        "status": row["status"],
        "left_at_ms": row["left_at_ms"],
        "blocked": holder_blocked(bool(row["blocked"]), self_fen),
        "subsidy_fen": sum(by_year.values()),  # every year's not yet cleared
        "subsidy_by_year": {str(y): fen for y, fen in sorted(by_year.items())},
        "self_fen": self_fen,
        "bank_account": leavers.mask(row["bank_account"]) if row["bank_account"] else None,
        "bank_account_changes": bank_accounts.changes(conn, row["id"]),
        "cards": [
            cards.to_json(c)
            for c in conn.execute(
                "SELECT * FROM cards WHERE holder_id = ? ORDER BY changed_at_ms, card_id", (row["id"],)
            )
        ],
    }
