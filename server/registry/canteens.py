"""Canteens in the registry: details, rules, shop items, the seed-table import, the directory.

Each function runs inside the caller's write transaction, validates everything before it
writes anything (so a refused change leaves no trace), and records one ``canteen`` delta
with the canteen's whole config so terminals get the new rules and prices. The rules
themselves (meal periods, prices, the reference-price cap) live in
:mod:`server.registry.canteen_config`; reading the seed's table lives in :mod:`server.registry.seed_table`.

The operator (company) is stored by name in ``canteens.operator``; operator tokens, bank
accounts and settlement are keyed by that name. A self-operated (自营) canteen without a
named operator is run by its host unit, whose name is then used.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from typing import Any

from server.downstream.changes import canteen_change
from server.downstream.deltas import record_delta
from server.infra.csvinput import LineError, read_table, rejected
from server.registry import seed_table
from server.registry.canteen_config import (
    MEAL_NAMES_ZH,
    MEAL_PERIODS,
    merge_config,
    validate_config,
    validate_item,
)
from server.registry.canteen_operators import hash_operator_pins, redact
from server.registry.units import add_unit, next_id, unit_by_name
from shared.errors import DomainError
from shared.money import format_fen, parse_yuan

DETAIL_FIELDS = (
    "location",
    "contact",
    "phone",
    "service_staff",
    "seats",
    "diners",
    "dining_area_m2",
    "notes",
)
_TEXT_FIELDS = {"name", "operator", "location", "contact", "phone", "notes"}
_COUNT_FIELDS = {"service_staff", "seats", "diners"}


def get(conn: sqlite3.Connection, canteen_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM canteens WHERE id = ?", (canteen_id,)).fetchone()
    if row is None:
        raise DomainError("unknown_canteen", canteen_id)
    return row


def to_json(row: sqlite3.Row) -> dict[str, Any]:
    """Everything the registry knows about a canteen (admin / auditor / its operator)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "unit_id": row["unit_id"],
        "operator": row["operator"],
        "self_operated": bool(row["self_operated"]),
        **{f: row[f] for f in DETAIL_FIELDS},
        "config": redact(json.loads(row["config_json"])),  # no operator's PIN record
    }


def _check_details(changes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key in _TEXT_FIELDS:
            if not isinstance(value, str) or (key == "name" and not value.strip()):
                raise DomainError(
                    "invalid_input", f"{key} must be text" + (" (not blank)" if key == "name" else "")
                )
            out[key] = value.strip()
        elif key in _COUNT_FIELDS:
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise DomainError("invalid_input", f"{key} must be a whole number ≥ 0")
            out[key] = value
        elif key == "dining_area_m2":
            if value is not None and (  # an area, not money: a finite number (JSON allows NaN)
                not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < math.inf
            ):
                raise DomainError("invalid_input", "dining_area_m2 must be a number ≥ 0")
            out[key] = None if value is None else float(value)
        elif key == "self_operated":
            if not isinstance(value, bool):
                raise DomainError("invalid_input", "self_operated must be true or false")
            out[key] = int(value)
        else:
            raise DomainError("invalid_input", f"unknown canteen field {key!r}")
    return out


def create(
    conn: sqlite3.Connection,
    name: str,
    unit_id: str,
    now_ms: int,
    *,
    canteen_id: str | None = None,
    config: dict[str, Any] | None = None,
    **details: Any,
) -> str:
    """A new canteen of ``unit_id``; returns its id."""
    if conn.execute("SELECT 1 FROM units WHERE id = ?", (unit_id,)).fetchone() is None:
        raise DomainError("not_found", f"unit {unit_id}")
    fields = _check_details({"name": name, **details})
    cfg = validate_config(hash_operator_pins(config or {}))
    canteen_id = canteen_id or next_id(conn, "canteens", "C")
    if conn.execute(
        "SELECT 1 FROM canteens WHERE id = ? OR name = ?", (canteen_id, fields["name"])
    ).fetchone():
        raise DomainError("already_exists", f"canteen {canteen_id} / {fields['name']}")
    _insert(conn, canteen_id, unit_id, fields, cfg)
    record_delta(conn, [canteen_change(get(conn, canteen_id))], now_ms)
    return canteen_id


def _insert(
    conn: sqlite3.Connection, canteen_id: str, unit_id: str, fields: dict[str, Any], cfg: dict[str, Any]
) -> None:
    if fields.get("self_operated") and not fields.get("operator"):
        fields["operator"] = conn.execute("SELECT name FROM units WHERE id = ?", (unit_id,)).fetchone()[0]
    cols = ["id", "unit_id", "config_json", *fields]
    conn.execute(
        f"INSERT INTO canteens({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        (canteen_id, unit_id, json.dumps(cfg, ensure_ascii=False), *fields.values()),
    )


def update(
    conn: sqlite3.Connection,
    canteen_id: str,
    now_ms: int,
    *,
    config: dict[str, Any] | None = None,
    **details: Any,
) -> sqlite3.Row:
    """Change details and/or rules (``config`` is merged, see merge_config); one delta."""
    row = get(conn, canteen_id)
    fields = _check_details(details)
    if (
        "name" in fields
        and conn.execute(
            "SELECT 1 FROM canteens WHERE name = ? AND id <> ?", (fields["name"], canteen_id)
        ).fetchone()
    ):
        raise DomainError("already_exists", f"canteen name {fields['name']}")
    cfg = (
        merge_config(json.loads(row["config_json"]), hash_operator_pins(config))
        if config is not None
        else None
    )
    if cfg is not None:
        fields["config_json"] = json.dumps(cfg, ensure_ascii=False)
    if fields:
        conn.execute(
            f"UPDATE canteens SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
            (*fields.values(), canteen_id),
        )
    row = get(conn, canteen_id)
    record_delta(conn, [canteen_change(row)], now_ms)
    return row


def set_item(
    conn: sqlite3.Connection,
    canteen_id: str,
    sku: str,
    name: str,
    price_fen: int,
    reference_price_fen: int,
    now_ms: int,
    barcodes: list[str] | None = None,
) -> dict[str, Any]:
    """Add or change a shop item; a price above its reference price is refused.

    ``barcodes`` replaces the item's barcodes (``[]`` removes them); ``None`` keeps those
    it has. A barcode another item of the canteen has is refused (``barcode_taken``)."""
    if barcodes is None:
        current = json.loads(get(conn, canteen_id)["config_json"]).get("items", {}).get(sku) or {}
        barcodes = list(current.get("barcodes", []))
    item: dict[str, Any] = {"name": name, "price_fen": price_fen, "reference_price_fen": reference_price_fen}
    if barcodes:
        item["barcodes"] = barcodes
    row = update(conn, canteen_id, now_ms, config={"items": {sku: item}})
    stored: dict[str, Any] = json.loads(row["config_json"])["items"][sku]
    return stored


def remove_item(conn: sqlite3.Connection, canteen_id: str, sku: str, now_ms: int) -> None:
    if sku not in json.loads(get(conn, canteen_id)["config_json"]).get("items", {}):
        raise DomainError("unknown_item", f"{canteen_id}/{sku}")
    update(conn, canteen_id, now_ms, config={"items": {sku: None}})


# -- the seed's table ---------------------------------------------------------------------


def import_table(
    conn: sqlite3.Connection,
    data: bytes | str,
    now_ms: int,
    *,
    create_units: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Import the 信息统计表: create or update (by name) every canteen it describes.

    All or nothing: any line error refuses the whole file (``import_rejected`` with every
    error). Unknown units are refused unless ``create_units`` (then created with a
    quarterly standard of 0, to be set). Returns a report of what was (or would be) done:
    ``changes`` per canteen (each field and meal from → to), and the file's ``unused_columns``.
    What the file does not give — a column it lacks, a blank cell for a time or visitor
    price — keeps its stored value.
    """
    table = seed_table.parse(data)
    plans, errors, named = table
    units: dict[str, str] = {}
    for unit_name, line in named.items():
        unit = unit_by_name(conn, unit_name)
        if unit is None and not create_units:
            errors.append(
                LineError(
                    line,
                    "单位名称",
                    "not_found",
                    f"unit {unit_name!r} is not registered "
                    "(add it first with unit add, or use --create-units)",
                    f"单位“{unit_name}”未登记（先用 unit add 登记，或加 --create-units 一并新建）",
                )
            )
        elif unit is not None:
            units[unit_name] = unit["id"]
    staged: list[tuple[CanteenStep, seed_table.CanteenPlan]] = []
    for plan in plans:
        existing = conn.execute("SELECT * FROM canteens WHERE name = ?", (plan.name,)).fetchone()
        if existing is not None and plan.unit_name in units and existing["unit_id"] != units[plan.unit_name]:
            errors.append(
                LineError(
                    plan.line,
                    "食堂名称",
                    "already_exists",
                    f"canteen {plan.name!r} belongs to another unit ({existing['unit_id']})",
                )
            )
            continue
        try:
            step = _step(plan, existing)
        except DomainError as exc:
            errors.append(LineError(plan.line, "", exc.code, exc.detail))
            continue
        staged.append((step, plan))
    if errors:
        raise rejected("canteen table", sorted(errors, key=lambda e: e.line))
    report: dict[str, Any] = {
        "created": [],
        "updated": [],
        "unchanged": [],
        "units_created": [],
        "unused_columns": table.unused,
        "changes": [
            {"canteen": p.name, "canteen_id": s.canteen_id, "unit": p.unit_name, "changes": s.changes}
            for s, p in staged
        ],
    }
    if dry_run:
        report["created"] = [p.name for s, p in staged if s.canteen_id is None]
        report["updated"] = [p.name for s, p in staged if s.canteen_id is not None and s.changes]
        report["unchanged"] = [p.name for s, p in staged if s.canteen_id is not None and not s.changes]
        report["units_created"] = [n for n in named if n not in units]
        return report
    for name in named:
        if name not in units:
            units[name] = next_id(conn, "units", "U")
            add_unit(conn, units[name], name, 0)
            report["units_created"].append(name)
    changes = []
    for step, plan in staged:
        if step.canteen_id is None:
            cid = next_id(conn, "canteens", "C")
            _insert(conn, cid, units[plan.unit_name], {"name": plan.name, **step.fields}, step.config)
            report["created"].append(plan.name)
        elif not step.changes:
            report["unchanged"].append(plan.name)
            continue
        else:
            cid = step.canteen_id
            step.fields["config_json"] = json.dumps(step.config, ensure_ascii=False)
            conn.execute(
                f"UPDATE canteens SET {', '.join(f'{k} = ?' for k in step.fields)} WHERE id = ?",
                (*step.fields.values(), cid),
            )
            report["updated"].append(plan.name)
        changes.append(canteen_change(get(conn, cid)))
    if changes:
        record_delta(conn, changes, now_ms)
    return report


class CanteenStep:
    """What applying one plan will write (validated before anything is written), and the
    changes it makes: ``[{"field": …, "from": …, "to": …}]`` (fen for prices)."""

    def __init__(
        self,
        canteen_id: str | None,
        fields: dict[str, Any],
        config: dict[str, Any],
        changes: list[dict[str, Any]],
    ) -> None:
        self.canteen_id, self.fields, self.config, self.changes = canteen_id, fields, config, changes


def _step(plan: seed_table.CanteenPlan, existing: sqlite3.Row | None) -> CanteenStep:
    given = {
        f: getattr(plan, f)
        for f in (*DETAIL_FIELDS, "operator", "self_operated")
        if getattr(plan, f) is not None
    }
    fields = _check_details(given)
    current = json.loads(existing["config_json"]) if existing is not None else {}
    stored_meals = current.get("meals") or {}
    meals: dict[str, Any] = {}
    for period, meal in plan.meals.items():
        if meal is None:
            meals[period] = None
        elif period in stored_meals:  # keep the stored times and visitor price the file leaves out
            meals[period] = {**stored_meals[period], **meal}
        else:
            meals[period] = seed_table.with_defaults(meal, period)
    config = merge_config(current, {"meals": meals}) if meals else validate_config(current)
    changes: list[dict[str, Any]] = []
    for f, value in fields.items():
        before = existing[f] if existing is not None else None
        if existing is None or before != value:
            changes.append({"field": f, "from": before, "to": value})
    new_meals = config.get("meals") or {}
    for period in MEAL_PERIODS:
        old, new = stored_meals.get(period) or {}, new_meals.get(period) or {}
        for key in ("price_fen", "start", "end", "visitor_price_fen"):
            if old.get(key) != new.get(key):
                changes.append({"field": f"{period}.{key}", "from": old.get(key), "to": new.get(key)})
    return CanteenStep(existing["id"] if existing is not None else None, fields, config, changes)


# -- shop items from a file ---------------------------------------------------------------

ITEM_ALIASES = {
    "食堂名称": "canteen",
    "食堂": "canteen",
    "食堂编号": "canteen",
    "canteen": "canteen",
    "canteenid": "canteen",
    "商品编号": "sku",
    "商品编码": "sku",
    "编号": "sku",
    "sku": "sku",
    "商品名称": "name",
    "品名": "name",
    "商品": "name",
    "名称": "name",
    "name": "name",
    "售价": "price",
    "价格": "price",
    "销售价": "price",
    "单价": "price",
    "price": "price",
    "参考价": "reference",
    "参考价格": "reference",
    "商场价": "reference",
    "大型商场价格": "reference",
    "市场参考价": "reference",
    "大型商场同类商品价格": "reference",
    "referenceprice": "reference",
    "条码": "barcodes",
    "条形码": "barcodes",
    "商品条码": "barcodes",
    "barcode": "barcodes",
    "barcodes": "barcodes",
}
BARCODE_SEPARATORS = re.compile(r"[、;；,，\s]+")


def import_items(
    conn: sqlite3.Connection, data: bytes | str, now_ms: int, *, dry_run: bool = False
) -> dict[str, Any]:
    """Shop items (食堂名称/编号, 商品编号, 商品名称, 售价, 参考价, optional 条码) — all or
    nothing; a price above its reference price refuses the file (``price_above_reference``
    on its line). 条码 holds the item's barcodes, several separated by ``、`` or ``;``; a
    barcode on two lines of a canteen, or already another item's, refuses the file."""
    table = read_table(data, ITEM_ALIASES, {"canteen", "sku", "name", "price", "reference"}, "shop items")
    errors: list[LineError] = []
    by_canteen: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, str], int] = {}
    codes_seen: dict[str, dict[str, int]] = {}  # canteen → barcode → line
    for line, cells in table.rows:
        row = conn.execute(
            "SELECT id FROM canteens WHERE id = ? OR name = ?", (cells["canteen"], cells["canteen"])
        ).fetchone()
        if row is None:
            errors.append(LineError(line, table.columns["canteen"], "unknown_canteen", cells["canteen"]))
            continue
        key = (row[0], cells["sku"])
        if key in seen:
            errors.append(
                LineError(
                    line, table.columns["sku"], "already_exists", f"{cells['sku']} also on line {seen[key]}"
                )
            )
            continue
        seen[key] = line
        try:
            item: dict[str, Any] = {
                "name": cells["name"],
                "price_fen": parse_yuan(cells["price"].removesuffix("元")),
                "reference_price_fen": parse_yuan(cells["reference"].removesuffix("元")),
            }
            if "barcodes" in table.columns:
                codes = [c for c in BARCODE_SEPARATORS.split(cells.get("barcodes") or "") if c]
            else:  # a file without the column leaves the items' barcodes as they are
                stored_item = json.loads(get(conn, row[0])["config_json"]).get("items", {}).get(cells["sku"])
                codes = list((stored_item or {}).get("barcodes", []))
            if codes:
                item["barcodes"] = codes
            item = validate_item(cells["sku"], item)
            owner = codes_seen.setdefault(row[0], {})
            for code in item.get("barcodes", ()):
                if code in owner:
                    raise DomainError("barcode_taken", f"{code} also on line {owner[code]}")
            owner.update(dict.fromkeys(item.get("barcodes", ()), line))
        except DomainError as exc:
            errors.append(LineError(line, "", exc.code, exc.detail))
            continue
        by_canteen.setdefault(row[0], {})[cells["sku"]] = item
    for canteen_id, items in by_canteen.items():  # against the items the file leaves as they are
        stored = json.loads(get(conn, canteen_id)["config_json"]).get("items", {})
        for sku, item in stored.items():
            for code in item.get("barcodes", ()) if sku not in items else ():
                if code in codes_seen[canteen_id]:
                    line = codes_seen[canteen_id][code]
                    column = table.columns.get("barcodes", "")
                    errors.append(LineError(line, column, "barcode_taken", f"{code}: {sku}"))
    if errors:
        raise rejected("shop items", errors)
    if not dry_run:
        for canteen_id, items in by_canteen.items():
            update(conn, canteen_id, now_ms, config={"items": items})
    return {"items": sum(len(v) for v in by_canteen.values()), "canteens": sorted(by_canteen)}


# -- the public directory (方案 四(二)3: 发布全市通用食堂的地点和联系方式) ------------------------


def directory(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every canteen: where it is, whom to call, when it serves meals and for how much."""
    out = []
    for row in conn.execute(
        "SELECT c.*, u.name AS unit_name FROM canteens c JOIN units u ON u.id = c.unit_id "
        "ORDER BY u.name, c.name"
    ):
        config = json.loads(row["config_json"])
        meals = [
            {
                "period": p,
                "period_zh": MEAL_NAMES_ZH[p],
                "start": m["start"],
                "end": m["end"],
                "price_fen": m["price_fen"],
                "price": format_fen(m["price_fen"]),
                "visitor_price_fen": m.get("visitor_price_fen"),
                "visitor_price": format_fen(m["visitor_price_fen"]) if m.get("visitor_price_fen") else None,
            }
            for p in MEAL_PERIODS
            if (m := (config.get("meals") or {}).get(p))
        ]
        out.append(
            {
                "canteen_id": row["id"],
                "name": row["name"],
                "unit": row["unit_name"],
                "location": row["location"],
                "contact": row["contact"],
                "phone": row["phone"],
                "seats": row["seats"],
                "meals": meals,
            }
        )
    return out
