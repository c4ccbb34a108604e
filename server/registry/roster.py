"""Staff roster import (单位名称, 姓名, 工号, 卡号): cardholders and their cards.

A cardholder is identified by (unit, 工号). Importing a roster:

* creates a cardholder for each new (unit, 工号) with the row's card;
* updates the name of a known one, and, when the row names a card the holder does not
  have yet, issues it and retires the holder's previous active card (purses stay with the
  holder, so no money moves);
* never touches a card the holder already has, whatever its status: re-importing an old
  file after a card was reported lost does not bring the lost card back;
* leaves cardholders missing from the file alone (a leaver is recorded explicitly).

The optional column 银行卡号 records the person's own bank account (the only place a
self-purse refund may go). All or nothing: every problem is reported with its line number
and nothing is written unless the whole file is valid; re-importing the same file changes
nothing. A clerk may import only their own unit's staff. New holders and every card issued
or retired are sent to terminals in one delta.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from server.downstream.changes import card_change
from server.downstream.deltas import record_delta
from server.infra.csvinput import LineError, read_table, rejected
from server.registry import bank_accounts, name_search
from server.registry.cards import CARD_ID
from server.registry.holders import holder_change
from server.registry.units import next_id
from shared.errors import DomainError

ALIASES = {
    "单位名称": "unit",
    "单位": "unit",
    "所属单位": "unit",
    "单位全称": "unit",
    "姓名": "name",
    "名字": "name",
    "人员姓名": "name",
    "职工姓名": "name",
    "工号": "staff_no",
    "职工号": "staff_no",
    "员工编号": "staff_no",
    "人员编号": "staff_no",
    "员工号": "staff_no",
    "编号": "staff_no",
    "卡号": "card_id",
    "卡片号": "card_id",
    "就餐卡号": "card_id",
    "ic卡号": "card_id",
    "卡号uid": "card_id",
    "物理卡号": "card_id",
    "银行卡号": "bank_account",
    "建行卡号": "bank_account",
    "银行账号": "bank_account",
    "建行储蓄卡号": "bank_account",
}
REQUIRED = {"unit", "name", "staff_no", "card_id"}
_BANK = re.compile(r"^\d{10,30}$")


def check_bank_account(value: str) -> str:
    """Digits only, 10–30 of them (spaces and dashes a clerk types are dropped)."""
    digits = re.sub(r"[\s\-]", "", value)
    if not _BANK.match(digits):
        raise DomainError(
            "invalid_input",
            f"{value!r} is not a bank account number (10–30 digits)",
            zh=f"“{value}”不是银行账号（应为 10 到 30 位数字）",
        )
    return digits


@dataclass(frozen=True)
class RosterRow:
    line: int
    unit_id: str
    name: str
    staff_no: str
    card_id: str
    bank_account: str | None


def import_roster(
    conn: sqlite3.Connection,
    data: bytes | str,
    now_ms: int,
    *,
    unit_scope: str | None = None,
    dry_run: bool = False,
    changed_by: str = "roster import",
) -> dict[str, Any]:
    """Import a roster (see module doc). ``unit_scope``: the only unit the caller may
    touch (a clerk's); ``changed_by``: who, for the log of bank account changes. Returns
    counts of what was (or, with ``dry_run``, would be) done."""
    table = read_table(data, ALIASES, REQUIRED, "staff roster")
    errors: list[LineError] = []
    rows = _rows(conn, table.rows, table.columns, unit_scope, errors)
    plan = _plan(conn, rows, table.columns, errors)
    if errors:
        raise rejected("staff roster", sorted(errors, key=lambda e: e.line))
    report: dict[str, Any] = {k: len(v) for k, v in plan.items()}
    report["rows"] = len(rows)
    report["holders"] = _touched(conn, plan)
    if not dry_run:
        _apply(conn, plan, now_ms, changed_by)
    return report


def _touched(conn: sqlite3.Connection, plan: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every holder the import creates or changes: id, name, 工号, new card, ``created``."""
    cards = {c["holder_id"]: c["card_id"] for c in plan["issued"]}
    out = [
        {
            "id": h["id"],
            "name": h["name"],
            "staff_no": h["staff_no"],
            "card_id": cards.get(h["id"]),
            "created": True,
        }
        for h in plan["new_holders"]
    ]
    new_ids = {h["id"] for h in plan["new_holders"]}
    renamed = {r["id"]: r["name"] for r in plan["renamed"]}
    changed = {c["id"] for c in plan["renamed"] + plan["bank_accounts"]} | (set(cards) - new_ids)
    for holder_id in sorted(changed):
        row = conn.execute("SELECT name, staff_no FROM holders WHERE id = ?", (holder_id,)).fetchone()
        out.append(
            {
                "id": holder_id,
                "name": renamed.get(holder_id, row["name"]),
                "staff_no": row["staff_no"],
                "card_id": cards.get(holder_id),
                "created": False,
            }
        )
    return out


def add_one(
    conn: sqlite3.Connection, unit_id: str, name: str, staff_no: str, card_id: str, now_ms: int
) -> str:
    """One new cardholder with their card, checked exactly as a roster line; returns the id."""
    unit = conn.execute("SELECT name FROM units WHERE id = ?", (unit_id,)).fetchone()
    if unit is None:
        raise DomainError("not_found", f"unit {unit_id}")
    if conn.execute(
        "SELECT 1 FROM holders WHERE unit_id = ? AND staff_no = ?", (unit_id, staff_no)
    ).fetchone():
        raise DomainError("already_exists", f"工号 {staff_no} in {unit_id}")
    cells = {"unit": unit[0], "name": name, "staff_no": staff_no, "card_id": card_id}
    columns = {k: k for k in cells}
    errors: list[LineError] = []
    plan = _plan(conn, _rows(conn, [(1, cells)], columns, unit_id, errors), columns, errors)
    if errors:
        raise DomainError(errors[0].code, errors[0].detail)
    _apply(conn, plan, now_ms)
    return str(plan["new_holders"][0]["id"])


def _apply(
    conn: sqlite3.Connection,
    plan: dict[str, list[dict[str, Any]]],
    now_ms: int,
    changed_by: str = "roster import",
) -> None:
    for change in plan["bank_accounts"]:  # logged before the update overwrites the old one
        old = conn.execute("SELECT bank_account FROM holders WHERE id = ?", (change["id"],)).fetchone()[0]
        bank_accounts.record_change(conn, change["id"], old, change["bank_account"], changed_by, now_ms)
    old_names = {
        c["id"]: conn.execute("SELECT name FROM holders WHERE id = ?", (c["id"],)).fetchone()[0]
        for c in plan["renamed"]
    }
    conn.executemany(
        "INSERT INTO holders(id, unit_id, name, staff_no, bank_account) VALUES (?, ?, ?, ?, ?)",
        [(h["id"], h["unit_id"], h["name"], h["staff_no"], h["bank_account"]) for h in plan["new_holders"]],
    )
    for h in plan["new_holders"]:
        if h.get("bank_account"):
            bank_accounts.record_change(conn, h["id"], None, h["bank_account"], changed_by, now_ms)
    for change in plan["renamed"]:
        conn.execute("UPDATE holders SET name = ? WHERE id = ?", (change["name"], change["id"]))
    for change in plan["bank_accounts"]:
        conn.execute(
            "UPDATE holders SET bank_account = ? WHERE id = ?", (change["bank_account"], change["id"])
        )
    name_search.index_new(conn, [(h["id"], h["name"]) for h in plan["new_holders"]])
    name_search.reindex(conn, [(c["id"], old_names[c["id"]], c["name"]) for c in plan["renamed"]])
    for card in plan["retired"]:
        conn.execute(
            "UPDATE cards SET status = 'retired', changed_at_ms = ?, replaced_by = ? WHERE card_id = ?",
            (now_ms, card["replaced_by"], card["card_id"]),
        )
    conn.executemany(
        "INSERT INTO cards(card_id, holder_id, status, changed_at_ms) VALUES (?, ?, 'active', ?)",
        [(c["card_id"], c["holder_id"], now_ms) for c in plan["issued"]],
    )
    changes = [holder_change(conn, h["id"], now_ms) for h in plan["new_holders"]]
    changes += [card_change(c["card_id"], c["holder_id"], "retired") for c in plan["retired"]]
    changes += [card_change(c["card_id"], c["holder_id"], "active") for c in plan["issued"]]
    record_delta(conn, changes, now_ms)


def _rows(
    conn: sqlite3.Connection,
    raw: list[tuple[int, dict[str, str]]],
    col: dict[str, str],
    unit_scope: str | None,
    errors: list[LineError],
) -> list[RosterRow]:
    units = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM units")}
    out: list[RosterRow] = []
    for line, cells in raw:
        before = len(errors)
        unit_id = units.get(cells["unit"])
        if not cells["unit"]:
            errors.append(LineError(line, col["unit"], "invalid_input", "单位名称 is blank", "单位名称为空"))
        elif unit_id is None:
            errors.append(
                LineError(
                    line,
                    col["unit"],
                    "not_found",
                    f"unit {cells['unit']!r} is not registered",
                    f"单位“{cells['unit']}”未登记（先用 unit add 登记）",
                )
            )
        elif unit_scope is not None and unit_id != unit_scope:
            errors.append(
                LineError(
                    line,
                    col["unit"],
                    "forbidden",
                    f"unit {cells['unit']!r} is not your unit",
                    f"“{cells['unit']}”不是本单位",
                )
            )
        if not cells["name"]:
            errors.append(LineError(line, col["name"], "invalid_input", "姓名 is blank", "姓名为空"))
        elif len(cells["name"]) > 64:
            errors.append(
                LineError(
                    line, col["name"], "invalid_input", "姓名 is longer than 64 characters", "姓名超过64个字"
                )
            )
        if not cells["staff_no"]:
            errors.append(
                LineError(
                    line,
                    col["staff_no"],
                    "invalid_input",
                    "工号 is blank (it identifies the person)",
                    "工号为空（工号用来识别本人）",
                )
            )
        card = re.sub(r"\s", "", cells["card_id"])
        if not card:
            errors.append(LineError(line, col["card_id"], "invalid_input", "卡号 is blank", "卡号为空"))
        elif not CARD_ID.match(card):
            errors.append(
                LineError(
                    line,
                    col["card_id"],
                    "invalid_input",
                    f"{cells['card_id']!r} is not a card number",
                    f"“{cells['card_id']}”不是卡号",
                )
            )
        bank = None
        if cells.get("bank_account"):
            try:
                bank = check_bank_account(cells["bank_account"])
            except DomainError as exc:
                errors.append(LineError(line, col["bank_account"], exc.code, exc.detail))
        if len(errors) == before and unit_id is not None:
            out.append(RosterRow(line, unit_id, cells["name"], cells["staff_no"], card, bank))
    return out


def _plan(
    conn: sqlite3.Connection, rows: list[RosterRow], col: dict[str, str], errors: list[LineError]
) -> dict[str, list[dict[str, Any]]]:
    plan: dict[str, list[dict[str, Any]]] = {
        "new_holders": [],
        "renamed": [],
        "unchanged": [],
        "issued": [],
        "retired": [],
        "bank_accounts": [],
    }
    seen_person: dict[tuple[str, str], int] = {}
    seen_card: dict[str, int] = {}
    fresh = _fresh_holder_ids(conn)
    for row in rows:
        person = (row.unit_id, row.staff_no)
        if person in seen_person:
            errors.append(
                LineError(
                    row.line,
                    col["staff_no"],
                    "already_exists",
                    f"工号 {row.staff_no} also on line {seen_person[person]}",
                    f"工号 {row.staff_no} 与第{seen_person[person]}行重复",
                )
            )
            continue
        if row.card_id in seen_card:
            errors.append(
                LineError(
                    row.line,
                    col["card_id"],
                    "already_exists",
                    f"卡号 {row.card_id} also on line {seen_card[row.card_id]}",
                    f"卡号 {row.card_id} 与第{seen_card[row.card_id]}行重复",
                )
            )
            continue
        seen_person[person], seen_card[row.card_id] = row.line, row.line
        holder = conn.execute(
            "SELECT id, name, status, bank_account FROM holders WHERE unit_id = ? AND staff_no = ?", person
        ).fetchone()
        if holder is not None and holder["status"] == "left":
            errors.append(
                LineError(
                    row.line,
                    col["staff_no"],
                    "holder_left",
                    f"{row.staff_no} ({holder['name']}) has left; a returning person gets a new 工号",
                    f"{row.staff_no}（{holder['name']}）已离职；返聘人员请用新工号",
                )
            )
            continue
        card = conn.execute(
            "SELECT c.holder_id, h.unit_id, h.staff_no FROM cards c JOIN holders h ON h.id = c.holder_id "
            "WHERE c.card_id = ?",
            (row.card_id,),
        ).fetchone()
        if card is not None and (holder is None or card["holder_id"] != holder["id"]):
            errors.append(_card_taken(row, col, card))
            continue
        if holder is None:
            holder_id = next(fresh)
            plan["new_holders"].append(
                {
                    "id": holder_id,
                    "unit_id": row.unit_id,
                    "name": row.name,
                    "staff_no": row.staff_no,
                    "bank_account": row.bank_account,
                }
            )
            plan["issued"].append({"card_id": row.card_id, "holder_id": holder_id})
            continue
        holder_id = holder["id"]
        changed = False
        if holder["name"] != row.name:
            plan["renamed"].append({"id": holder_id, "name": row.name})
            changed = True
        if row.bank_account and row.bank_account != holder["bank_account"]:
            plan["bank_accounts"].append({"id": holder_id, "bank_account": row.bank_account})
            changed = True
        if card is None:  # a card this holder does not have yet: it replaces the active one
            for old in conn.execute(
                "SELECT card_id FROM cards WHERE holder_id = ? AND status = 'active'", (holder_id,)
            ):
                plan["retired"].append(
                    {"card_id": old[0], "holder_id": holder_id, "replaced_by": row.card_id}
                )
            plan["issued"].append({"card_id": row.card_id, "holder_id": holder_id})
            changed = True
        if not changed:
            plan["unchanged"].append({"id": holder_id})
    return plan


def _card_taken(row: RosterRow, col: dict[str, str], owner: sqlite3.Row) -> LineError:
    """The card is someone else's. Within the importing unit the clerk may see whose; a card
    of another unit is only "registered elsewhere" — no unit, no person, no 工号."""
    if owner["unit_id"] == row.unit_id:
        return LineError(
            row.line,
            col["card_id"],
            "already_exists",
            f"卡号 {row.card_id} belongs to 工号 {owner['staff_no']}",
            f"卡号 {row.card_id} 已属于本单位工号 {owner['staff_no']}",
        )
    return LineError(
        row.line,
        col["card_id"],
        "card_registered_elsewhere",
        f"卡号 {row.card_id} is registered elsewhere",
        f"卡号 {row.card_id} 已在其他单位登记",
    )


def _fresh_holder_ids(conn: sqlite3.Connection) -> Iterator[str]:
    """Unused holder ids H000001, H000002 … (not yet in the table, none given twice)."""
    n = int(next_id(conn, "holders", "H", 6)[1:])
    while True:
        candidate = f"H{n:06d}"
        if conn.execute("SELECT 1 FROM holders WHERE id = ?", (candidate,)).fetchone() is None:
            yield candidate
        n += 1
