"""Reports: sales totals per canteen and per unit, the cross-unit dining matrix, late
allocations, overdrafts and blocked cards. Read-only; amounts in integer fen.

* **Totals** (:func:`sales_totals`) for any period (a Beijing day, a quarter): per canteen
  (the host) — count, amount, how much the subsidy and self purses paid, digital RMB — and
  per unit (the diners' unit: what its staff spent, wherever they ate).
* **Dining matrix** (:func:`dining_matrix`): diners' unit × host canteen, count and
  amount. Cells where the diner's unit is not the canteen's unit are the cross-unit meals
  that replace same-city hospitality (同城接待, 一函多餐) — the point of the policy — and
  are summed separately.
* **Late allocations** (:func:`allocation_status`): per unit, for one quarter, whether the
  allocation came on time (by the 10th of its first month), late, or is still missing.
* **Overdrafts** and **blocked cards**: who is below zero after offline spending, and which
  holders/cards terminals refuse and why.
* **Shop sales** (:func:`shop_sales`): by item (per canteen) or by canteen, for a day or a
  quarter, optionally one row per day; CSV by :func:`shop_sales_csv` through
  :mod:`server.infra.csv_safe`.

Sales count by ``occurred_at_ms`` (when the diner paid), applied sales only, less those
reversed (冲正: a reversed sale is not in the totals, the matrix or the shop report).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from typing import Any

from server.books import ledger
from server.books.periods import Quarter, day_of_ms
from server.infra.csv_safe import Number, write_csv
from server.infra.schema import not_reversed_sql
from shared.money import format_fen

_KEYS = ("count", "amount_fen", "subsidy_fen", "self_fen", "ecny_fen")


def _grouped(conn: sqlite3.Connection, start_ms: int, end_ms: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT canteen_id, unit_id, method = 'ecny' AS ecny, count(*) AS n, sum(amount_fen) AS amount, "
        "sum(subsidy_fen) AS subsidy, sum(self_fen) AS self FROM sales "
        f"WHERE status = 'applied' AND occurred_at_ms >= ? AND occurred_at_ms < ? AND {not_reversed_sql()} "
        "GROUP BY canteen_id, unit_id, method = 'ecny'",
        (start_ms, end_ms),
    ).fetchall()


def _canteens(conn: sqlite3.Connection) -> dict[str, sqlite3.Row]:
    return {r["id"]: r for r in conn.execute("SELECT id, name, unit_id, operator FROM canteens")}


def sales_totals(
    conn: sqlite3.Connection, start_ms: int, end_ms: int, canteen_ids: list[str] | None = None
) -> dict[str, Any]:
    """Totals per canteen and per diners' unit for [start_ms, end_ms)."""
    canteens = _canteens(conn)
    units = dict(conn.execute("SELECT id, name FROM units").fetchall())
    by_canteen: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_KEYS, 0))
    by_unit: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_KEYS, 0))
    for r in _grouped(conn, start_ms, end_ms):
        if canteen_ids is not None and r["canteen_id"] not in canteen_ids:
            continue
        targets = [by_canteen[r["canteen_id"]]] + ([by_unit[r["unit_id"]]] if r["unit_id"] else [])
        for t in targets:
            t["count"] += r["n"]
            t["amount_fen"] += r["amount"]
            t["subsidy_fen"] += r["subsidy"]
            t["self_fen"] += r["self"]
            t["ecny_fen"] += r["amount"] if r["ecny"] else 0
    canteen_rows = [
        {
            "canteen_id": c,
            "canteen_name": canteens[c]["name"] if c in canteens else "",
            "unit_id": canteens[c]["unit_id"] if c in canteens else "",
            **v,
        }
        for c, v in sorted(by_canteen.items())
    ]
    unit_rows = [{"unit_id": u, "unit_name": units.get(u, ""), **v} for u, v in sorted(by_unit.items())]
    return {
        "from_ms": start_ms,
        "to_ms": end_ms,
        "canteens": canteen_rows,
        "units": unit_rows,
        "totals": {k: sum(r[k] for r in canteen_rows) for k in _KEYS},
    }


def dining_matrix(
    conn: sqlite3.Connection, start_ms: int, end_ms: int, canteen_ids: list[str] | None = None
) -> dict[str, Any]:
    """Diners' unit × host canteen, with the cross-unit share."""
    canteens = _canteens(conn)
    cells: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in _grouped(conn, start_ms, end_ms):
        if r["unit_id"] is None or (canteen_ids is not None and r["canteen_id"] not in canteen_ids):
            continue
        cell = cells[(r["unit_id"], r["canteen_id"])]
        cell[0] += r["n"]
        cell[1] += r["amount"]
    rows, cross = [], [0, 0]
    for (unit_id, canteen_id), (count, amount) in sorted(cells.items()):
        host = canteens[canteen_id]["unit_id"] if canteen_id in canteens else None
        is_cross = host != unit_id
        if is_cross:
            cross[0] += count
            cross[1] += amount
        rows.append(
            {
                "diner_unit_id": unit_id,
                "canteen_id": canteen_id,
                "host_unit_id": host,
                "cross_unit": is_cross,
                "count": count,
                "amount_fen": amount,
            }
        )
    total = [sum(r["count"] for r in rows), sum(r["amount_fen"] for r in rows)]
    return {
        "from_ms": start_ms,
        "to_ms": end_ms,
        "cells": rows,
        "totals": {"count": total[0], "amount_fen": total[1]},
        "cross_unit": {"count": cross[0], "amount_fen": cross[1]},
    }


def allocation_status(
    conn: sqlite3.Connection, quarter: str, now_ms: int, unit_id: str | None = None
) -> dict[str, Any]:
    """Per unit with anyone on its roster: on_time / late / missing (due date passed, none
    yet) / pending (not due yet, none yet)."""
    q = Quarter.parse(quarter)
    due = q.allocation_due_ms
    rows = []
    for u in conn.execute(
        "SELECT u.id, u.name, "
        "(SELECT count(*) FROM holders h WHERE h.unit_id = u.id AND h.status = 'active') "
        "FROM units u WHERE ? IS NULL OR u.id = ? ORDER BY u.id",
        (unit_id, unit_id),
    ).fetchall():
        a = conn.execute(
            "SELECT at_ms, total_fen, headcount, per_person_fen FROM allocations "
            "WHERE unit_id = ? AND quarter = ?",
            (u[0], str(q)),
        ).fetchone()
        if a is None and u[2] == 0:
            continue  # nobody to allocate for
        if a is not None:
            status = "on_time" if a["at_ms"] < due else "late"
        else:
            status = "missing" if now_ms >= due else "pending"
        rows.append(
            {
                "unit_id": u[0],
                "unit_name": u[1],
                "status": status,
                "due_ms": due,
                "allocated_at_ms": a["at_ms"] if a else None,
                "total_fen": a["total_fen"] if a else 0,
                "headcount": a["headcount"] if a else u[2],
                "per_person_fen": a["per_person_fen"] if a else None,
            }
        )
    flagged = [r["unit_id"] for r in rows if r["status"] in ("late", "missing")]
    return {"quarter": str(q), "due_ms": due, "units": rows, "flagged": flagged}


def overdrafts(conn: sqlite3.Connection, unit_id: str | None = None) -> dict[str, Any]:
    """Holders whose self purse is below zero (uncovered offline overdrafts), with the
    overdrafts recorded on their sales."""
    subsidy = ledger.is_subsidy_purse_sql("s.id", "h.id")
    # from the few accounts below zero (index accounts_overdrawn) to their holders
    rows = conn.execute(
        f"SELECT h.id, h.name, h.unit_id, a.balance_fen AS self_fen, "
        f"(SELECT coalesce(sum(balance_fen), 0) FROM accounts s WHERE {subsidy}) AS subsidy_fen, "
        "(SELECT count(*) FROM sales s WHERE s.holder_id = h.id AND s.overdraft_fen > 0) AS sales, "
        "(SELECT coalesce(sum(overdraft_fen), 0) FROM sales s WHERE s.holder_id = h.id) AS recorded_fen "
        f"FROM accounts a JOIN holders h ON h.id = {ledger.self_purse_holder_sql('a.id')} "
        "WHERE a.kind = 'self_purse' AND a.balance_fen < 0 AND (? IS NULL OR h.unit_id = ?) "
        "ORDER BY a.balance_fen, h.id",
        (unit_id, unit_id),
    ).fetchall()
    holders = [
        {
            "holder_id": r["id"],
            "name": r["name"],
            "unit_id": r["unit_id"],
            "self_fen": r["self_fen"],
            "subsidy_fen": r["subsidy_fen"],
            "overdraft_sales": r["sales"],
            "overdraft_recorded_fen": r["recorded_fen"],
        }
        for r in rows
    ]
    return {"holders": holders, "total_overdrawn_fen": -sum(h["self_fen"] for h in holders)}


def blocked_cards(conn: sqlite3.Connection, unit_id: str | None = None) -> dict[str, Any]:
    """Cards terminals refuse, with the reason: the card is lost/retired, or its holder is
    blocked by an administrator, has left, or has an uncovered overdraft."""
    self_id = ledger.purse_id_sql("h.id", "self")
    out = []
    for r in conn.execute(
        "SELECT c.card_id, c.status, h.id AS holder_id, h.name, h.unit_id, h.blocked, "
        "h.status AS holder_status, "
        f"coalesce((SELECT balance_fen FROM accounts WHERE id = {self_id}), 0) AS self_fen "
        "FROM cards c JOIN holders h ON h.id = c.holder_id "
        "WHERE (? IS NULL OR h.unit_id = ?) ORDER BY c.card_id",
        (unit_id, unit_id),
    ):
        reasons = []
        if r["status"] != "active":
            reasons.append(f"card_{r['status']}")
        if r["holder_status"] == "left":
            reasons.append("holder_left")
        elif r["blocked"]:
            reasons.append("holder_blocked")
        if r["self_fen"] < 0:
            reasons.append("overdraft")
        if reasons:
            out.append(
                {
                    "card_id": r["card_id"],
                    "card_status": r["status"],
                    "holder_id": r["holder_id"],
                    "name": r["name"],
                    "unit_id": r["unit_id"],
                    "self_fen": r["self_fen"],
                    "reasons": reasons,
                }
            )
    return {"cards": out}


SHOP_GROUPINGS = ("item", "canteen")


def shop_sales(
    conn: sqlite3.Connection,
    start_ms: int,
    end_ms: int,
    canteen_id: str | None = None,
    *,
    by: str = "item",
    per_day: bool = False,
) -> dict[str, Any]:
    """Shop sales for [start_ms, end_ms), applied shop sales only, not reversed: ``by="item"`` per canteen
    and sku — the quantity sold and the amount (qty × the unit price each sale recorded),
    the item's name the canteen's current one (blank for an item no longer sold) — in
    ``items``; ``by="canteen"`` per canteen — sales, pieces and amount (a typed amount
    counts with no pieces) — in ``canteens``. ``per_day``: one row per Beijing day as well."""
    if by not in SHOP_GROUPINGS:
        raise ValueError(f"by: one of {SHOP_GROUPINGS}")
    sql = (
        "SELECT canteen_id, occurred_at_ms, amount_fen, items_json FROM sales "
        "WHERE status = 'applied' AND kind = 'shop' AND occurred_at_ms >= ? AND occurred_at_ms < ? "
        f"AND {not_reversed_sql()}"
    )
    args: list[Any] = [start_ms, end_ms]
    if canteen_id is not None:
        sql += " AND canteen_id = ?"
        args.append(canteen_id)
    cells: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # sales, qty, amount
    for r in conn.execute(sql, args):
        day = day_of_ms(r["occurred_at_ms"]) if per_day else ""
        items = json.loads(r["items_json"]) if r["items_json"] else []
        if by == "canteen":
            cell = cells[(day, r["canteen_id"], "")]
            cell[0] += 1
            cell[1] += sum(item["qty"] for item in items)
            cell[2] += r["amount_fen"]
            continue
        for item in items:
            cell = cells[(day, r["canteen_id"], item["sku"])]
            cell[0] += 1
            cell[1] += item["qty"]
            cell[2] += item["qty"] * item["unit_price_fen"]
    names: dict[str, tuple[str, dict[str, Any]]] = {
        row["id"]: (row["name"], json.loads(row["config_json"]).get("items", {}))
        for row in conn.execute("SELECT id, name, config_json FROM canteens")
    }
    rows = []
    for (day, cid, sku), (sales, qty, amount) in sorted(cells.items()):
        canteen_name, items = names.get(cid, ("", {}))
        row: dict[str, Any] = {"day": day} if per_day else {}
        row.update(canteen_id=cid, canteen_name=canteen_name)
        if by == "item":
            row.update(sku=sku, name=(items.get(sku) or {}).get("name", ""))
        row.update(sales=sales, qty=qty, amount_fen=amount)
        rows.append(row)
    return {
        "from_ms": start_ms,
        "to_ms": end_ms,
        "canteen_id": canteen_id,
        "by": by,
        "per_day": per_day,
        ("items" if by == "item" else "canteens"): rows,
        "totals": {
            **(
                {"sales": sum(r["sales"] for r in rows)} if by == "canteen" else {}
            ),  # by item: a sale counts once per item
            "qty": sum(r["qty"] for r in rows),
            "amount_fen": sum(r["amount_fen"] for r in rows),
        },
    }


SHOP_CSV_HEADERS = ("食堂编号", "食堂名称", "商品编号", "商品名称", "笔数", "数量", "金额(元)", "金额(分)")


def shop_sales_csv(data: dict[str, Any]) -> str:
    """The shop report (:func:`shop_sales`) as CSV through the formula-safe writer (names
    come from clerks); a 日期 column first when it is per day, no item columns by canteen."""
    per_day, by_item = data.get("per_day", False), data.get("by", "item") == "item"
    headers = (("日期",) if per_day else ()) + SHOP_CSV_HEADERS[:2]
    headers += (SHOP_CSV_HEADERS[2:4] if by_item else ()) + SHOP_CSV_HEADERS[4:]
    rows = [
        ((r["day"],) if per_day else ())
        + (r["canteen_id"], r["canteen_name"])
        + ((r["sku"], r["name"]) if by_item else ())
        + (r["sales"], r["qty"], Number(format_fen(r["amount_fen"]).removeprefix("¥")), r["amount_fen"])
        for r in data["items" if by_item else "canteens"]
    ]
    return write_csv(headers, rows)
