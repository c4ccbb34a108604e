"""Units, canteens, cardholders and cards: the registry the money hangs on.

Every function here runs inside the caller's write transaction and records the downstream
changes terminals need (a canteen's rules, a holder, a card) with the same commit.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from server.downstream.changes import canteen_change, card_change, settings_change
from server.downstream.deltas import record_delta
from server.infra.db import set_setting
from server.registry import name_search
from server.registry.holders import holder_change
from shared.errors import DomainError

_ID = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")


def _check_standard(quarterly_standard_fen: int) -> None:
    """A unit's per-person quarterly meal-fund standard: a whole number of fen, not negative."""
    if (
        not isinstance(quarterly_standard_fen, int)
        or isinstance(quarterly_standard_fen, bool)
        or quarterly_standard_fen < 0
    ):
        raise DomainError(
            "invalid_input",
            "quarterly standard must be a whole number of fen ≥ 0",
            zh="季度补贴标准须为不小于 0 的金额",
        )


def add_unit(conn: sqlite3.Connection, unit_id: str, name: str, quarterly_standard_fen: int = 0) -> None:
    """A unit (单位) with its per-person quarterly meal-fund standard in fen."""
    _check_standard(quarterly_standard_fen)
    name = name.strip()
    if not name or not _ID.match(unit_id):
        raise DomainError(
            "invalid_input",
            "a unit needs a name and an id of letters, digits, '-' or '_'",
            zh="单位须有名称，编号只能用字母、数字、- 和 _",
        )
    if conn.execute("SELECT 1 FROM units WHERE id = ? OR name = ?", (unit_id, name)).fetchone():
        raise DomainError("already_exists", f"unit {unit_id} / {name}")
    conn.execute(
        "INSERT INTO units(id, name, quarterly_standard_fen) VALUES (?, ?, ?)",
        (unit_id, name, quarterly_standard_fen),
    )


def add_canteen(
    conn: sqlite3.Connection,
    canteen_id: str,
    name: str,
    unit_id: str,
    *,
    operator: str = "",
    self_operated: bool = False,
    config: dict[str, Any] | None = None,
    now_ms: int,
) -> None:
    if conn.execute("SELECT 1 FROM units WHERE id = ?", (unit_id,)).fetchone() is None:
        raise DomainError("not_found", f"unit {unit_id}")
    if conn.execute("SELECT 1 FROM canteens WHERE id = ? OR name = ?", (canteen_id, name)).fetchone():
        raise DomainError("already_exists", f"canteen {canteen_id} / {name}")
    conn.execute(
        "INSERT INTO canteens(id, name, unit_id, operator, self_operated, config_json) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            canteen_id,
            name,
            unit_id,
            operator,
            int(self_operated),
            json.dumps(config or {}, ensure_ascii=False),
        ),
    )
    row = conn.execute("SELECT * FROM canteens WHERE id = ?", (canteen_id,)).fetchone()
    record_delta(conn, [canteen_change(row)], now_ms)


def add_holder(
    conn: sqlite3.Connection,
    holder_id: str,
    unit_id: str,
    name: str,
    card_id: str,
    *,
    staff_no: str | None = None,
    now_ms: int,
) -> None:
    """A new cardholder with their first card (purses start at zero)."""
    if conn.execute("SELECT 1 FROM units WHERE id = ?", (unit_id,)).fetchone() is None:
        raise DomainError("not_found", f"unit {unit_id}")
    if conn.execute("SELECT 1 FROM holders WHERE id = ?", (holder_id,)).fetchone():
        raise DomainError("already_exists", f"holder {holder_id}")
    if conn.execute("SELECT 1 FROM cards WHERE card_id = ?", (card_id,)).fetchone():
        raise DomainError("already_exists", f"card {card_id}")
    conn.execute(
        "INSERT INTO holders(id, unit_id, name, staff_no) VALUES (?, ?, ?, ?)",
        (holder_id, unit_id, name, staff_no),
    )
    name_search.index_new(conn, [(holder_id, name)])
    conn.execute("INSERT INTO cards(card_id, holder_id) VALUES (?, ?)", (card_id, holder_id))
    record_delta(
        conn,
        [
            holder_change(conn, holder_id, now_ms),
            card_change(card_id, holder_id, "active"),
        ],
        now_ms,
    )


def holder_of_card(conn: sqlite3.Connection, card_id: str) -> sqlite3.Row:
    row = conn.execute(
        "SELECT c.card_id, c.status, h.id AS holder_id, h.unit_id, h.name "
        "FROM cards c JOIN holders h ON h.id = c.holder_id WHERE c.card_id = ?",
        (card_id,),
    ).fetchone()
    if row is None:
        raise DomainError("card_unknown", card_id)
    return row


def set_terminal_settings(conn: sqlite3.Connection, settings: dict[str, Any], now_ms: int) -> None:
    """City-wide terminal settings (risk limits and the like), pushed to every terminal."""
    set_setting(conn, "terminal_settings", json.dumps(settings, ensure_ascii=False))
    record_delta(conn, [settings_change(settings)], now_ms)


def next_id(conn: sqlite3.Connection, table: str, prefix: str, width: int = 4) -> str:
    """The next free ``<prefix><number>`` id in ``table`` (units, canteens, holders)."""
    if table not in {"units", "canteens", "holders"}:
        raise ValueError(table)
    n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] + 1  # table is whitelisted above
    while conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (f"{prefix}{n:0{width}d}",)).fetchone():
        n += 1
    return f"{prefix}{n:0{width}d}"


def unit_by_name(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM units WHERE name = ?", (name.strip(),)).fetchone()


def get_unit(conn: sqlite3.Connection, unit_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM units WHERE id = ?", (unit_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"unit {unit_id}")
    return row


def unit_json(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    holders = conn.execute(
        "SELECT count(*) FROM holders WHERE unit_id = ? AND status = 'active'", (row["id"],)
    ).fetchone()[0]
    canteens = [
        r[0] for r in conn.execute("SELECT id FROM canteens WHERE unit_id = ? ORDER BY id", (row["id"],))
    ]
    return {
        "id": row["id"],
        "name": row["name"],
        "quarterly_standard_fen": row["quarterly_standard_fen"],
        "active_holders": holders,
        "canteens": canteens,
    }


def update_unit(
    conn: sqlite3.Connection,
    unit_id: str,
    *,
    name: str | None = None,
    quarterly_standard_fen: int | None = None,
) -> sqlite3.Row:
    """Rename a unit or change its per-person quarterly meal-fund standard (就餐经费标准).
    The standard applies to allocations made after the change; past ones stay as posted."""
    get_unit(conn, unit_id)
    if quarterly_standard_fen is not None:
        _check_standard(quarterly_standard_fen)
        conn.execute(
            "UPDATE units SET quarterly_standard_fen = ? WHERE id = ?", (quarterly_standard_fen, unit_id)
        )
    if name is not None:
        if not name.strip():
            raise DomainError("invalid_input", "a unit needs a name", zh="请填写单位名称")
        if conn.execute("SELECT 1 FROM units WHERE name = ? AND id <> ?", (name.strip(), unit_id)).fetchone():
            raise DomainError("already_exists", f"unit name {name}")
        conn.execute("UPDATE units SET name = ? WHERE id = ?", (name.strip(), unit_id))
    return get_unit(conn, unit_id)
