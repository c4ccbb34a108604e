"""Canteens: the seed-table import, details and rules, shop items, and the public directory.

Writes are the bureau's (admin). Reads: admin and auditor see every canteen, a clerk their
own unit's, an operator the canteens they run. The directory — where to eat, when, for how
much, whom to call — is public: the seed publishes it to every unit (方案 四(二)3), and a
visitor from another unit must be able to find a canteen before anyone gives them a token.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify

from server.api.params import fen, flag, json_body, text, uploaded_file
from server.api.spec import doc
from server.infra.auth import public, requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import may_access_canteen, require_canteen_access
from server.registry import canteens
from shared.errors import DomainError

bp = Blueprint("canteens", __name__, url_prefix="/api/v1/canteens")
directory_bp = Blueprint("directory", __name__, url_prefix="/api/v1/directory")

MEAL = {
    "type": "object",
    "properties": {
        "start": {"type": "string", "example": "11:30"},
        "end": {"type": "string", "example": "13:30"},
        "price_fen": {"type": "integer"},
        "visitor_price_fen": {"type": ["integer", "null"]},
    },
}
ITEM = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "price_fen": {"type": "integer"},
        "reference_price_fen": {"type": "integer"},
        "barcodes": {
            "type": "array",
            "items": {"type": "string", "example": "6901234567892"},
            "description": "EAN-13/EAN-8/UPC-A (stored as EAN-13); one item per barcode in a canteen",
        },
    },
}
CONFIG = {
    "type": "object",
    "description": "the rules terminals read; in a PATCH, meals/items merge and null removes one",
    "properties": {
        "meals": {"type": "object", "additionalProperties": MEAL},
        "meal_limit": {"type": "integer", "minimum": 1},
        "items": {"type": "object", "additionalProperties": ITEM},
        "allow_uid_only": {"type": "boolean"},
        "risk": {"type": "object", "additionalProperties": {"type": "integer"}},
        "allow_typed_amount": {"type": "boolean", "description": "the cashier may type a shop amount"},
        "max_typed_amount_fen": {"type": ["integer", "null"], "minimum": 1, "description": "its cap"},
    },
}
DETAILS = {
    "name": {"type": "string"},
    "operator": {"type": "string", "description": "operator company; operator tokens and payouts key on it"},
    "self_operated": {"type": "boolean", "description": "自营: pays no system fee"},
    "location": {"type": "string"},
    "contact": {"type": "string"},
    "phone": {"type": "string"},
    "service_staff": {"type": ["integer", "null"]},
    "seats": {"type": ["integer", "null"], "description": "食堂容量: diners at once"},
    "diners": {"type": ["integer", "null"], "description": "用餐人数: the people who eat there"},
    "dining_area_m2": {"type": ["number", "null"]},
    "notes": {"type": "string"},
}
CANTEEN = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "unit_id": {"type": "string"}, **DETAILS, "config": CONFIG},
}
IMPORT_REPORT = {
    "type": "object",
    "properties": {
        "created": {"type": "array", "items": {"type": "string"}},
        "updated": {"type": "array", "items": {"type": "string"}},
        "units_created": {"type": "array", "items": {"type": "string"}},
    },
}
CSV = {"type": "string", "format": "binary"}


def _details(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k in DETAILS}


@bp.get("")
@doc("Canteens the caller may see, with details and rules", response={"type": "array", "items": CANTEEN})
@requires("admin", "auditor", "clerk", "operator")
def list_canteens() -> Response:
    rows = get_db().execute("SELECT * FROM canteens ORDER BY id").fetchall()
    who = g.principal
    return jsonify(
        [canteens.to_json(r) for r in rows if may_access_canteen(who, r["unit_id"], r["operator"])]
    )


@bp.post("")
@doc(
    "Register one canteen",
    request={
        "type": "object",
        "required": ["name", "unit_id"],
        "properties": {"unit_id": {"type": "string"}, "id": {"type": "string"}, **DETAILS, "config": CONFIG},
    },
    response=CANTEEN,
    status=201,
)
@requires("admin")
def create_canteen() -> tuple[Response, int]:
    body = json_body()
    unknown = set(body) - set(DETAILS) - {"unit_id", "id", "config"}
    if unknown:
        raise DomainError("invalid_input", f"unknown field(s) {', '.join(sorted(unknown))}")
    conn = get_db()
    details = _details(body)
    name = text(body, "name") or ""
    details.pop("name", None)
    with write_txn(conn):
        cid = canteens.create(
            conn,
            name,
            text(body, "unit_id") or "",
            get_clock().now_ms(),
            canteen_id=text(body, "id", required=False),
            config=body.get("config"),
            **details,
        )
        row = canteens.get(conn, cid)
    return jsonify(canteens.to_json(row)), 201


@bp.post("/import")
@doc(
    "Import the seed's attachment table (信息统计表) as CSV; all or nothing",
    query={"dry_run": {"type": "boolean"}, "create_units": {"type": "boolean"}},
    request=CSV,
    request_type="text/csv",
    response=IMPORT_REPORT,
)
@requires("admin")
def import_canteens() -> Response:
    data = uploaded_file()
    conn = get_db()
    with write_txn(conn):
        report = canteens.import_table(
            conn, data, get_clock().now_ms(), create_units=flag("create_units"), dry_run=flag("dry_run")
        )
    return jsonify(report)


@bp.post("/items/import")
@doc(
    "Import shop items (食堂名称, 商品编号, 商品名称, 售价, 参考价) as CSV; all or nothing",
    query={"dry_run": {"type": "boolean"}},
    request=CSV,
    request_type="text/csv",
    response={"type": "object", "properties": {"items": {"type": "integer"}, "canteens": {"type": "array"}}},
)
@requires("admin")
def import_items() -> Response:
    data = uploaded_file()
    conn = get_db()
    with write_txn(conn):
        report = canteens.import_items(conn, data, get_clock().now_ms(), dry_run=flag("dry_run"))
    return jsonify(report)


@bp.get("/<canteen_id>")
@doc("One canteen with its details and rules", response=CANTEEN)
@requires("admin", "auditor", "clerk", "operator")
def get_canteen(canteen_id: str) -> Response:
    return jsonify(canteens.to_json(require_canteen_access(get_db(), canteen_id)))


@bp.patch("/<canteen_id>")
@doc(
    "Change details and/or rules; terminals get the new rules",
    request={"type": "object", "properties": {**DETAILS, "config": CONFIG}},
    response=CANTEEN,
)
@requires("admin")
def update_canteen(canteen_id: str) -> Response:
    body = json_body()
    unknown = set(body) - set(DETAILS) - {"config"}
    if unknown:
        raise DomainError("invalid_input", f"unknown field(s) {', '.join(sorted(unknown))}")
    conn = get_db()
    with write_txn(conn):
        row = canteens.update(
            conn, canteen_id, get_clock().now_ms(), config=body.get("config"), **_details(body)
        )
    return jsonify(canteens.to_json(row))


@bp.put("/<canteen_id>/items/<sku>")
@doc(
    "Add or change a shop item; a price above the reference store price is refused",
    request={
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "price_fen": {"type": "integer"},
            "price": {"type": "string"},
            "reference_price_fen": {"type": "integer"},
            "reference_price": {"type": "string"},
            "barcodes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "replaces the item's barcodes ([] removes them); absent keeps them",
            },
        },
    },
    response=ITEM,
)
@requires("admin")
def put_item(canteen_id: str, sku: str) -> Response:
    body = json_body()
    conn = get_db()
    with write_txn(conn):
        item = canteens.set_item(
            conn,
            canteen_id,
            sku,
            text(body, "name") or "",
            fen(body, "price") or 0,
            fen(body, "reference_price") or 0,
            get_clock().now_ms(),
            barcodes=_barcodes(body),
        )
    return jsonify(item)


def _barcodes(body: dict[str, Any]) -> list[str] | None:
    """The body's ``barcodes``: a list of strings, or absent/null (keep the item's)."""
    value = body.get("barcodes")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DomainError("invalid_input", "barcodes: a list of strings")
    return value


@bp.delete("/<canteen_id>/items/<sku>")
@doc("Stop selling a shop item", response={"type": "object", "properties": {"removed": {"type": "string"}}})
@requires("admin")
def delete_item(canteen_id: str, sku: str) -> Response:
    conn = get_db()
    with write_txn(conn):
        canteens.remove_item(conn, canteen_id, sku, get_clock().now_ms())
    return jsonify({"removed": sku})


@directory_bp.get("")
@doc(
    "Public canteen directory: name, host unit, location, contact, phone, meal times and prices",
    response={"type": "array", "items": {"type": "object"}},
)
@public
def directory() -> Response:
    return jsonify(canteens.directory(get_db()))
