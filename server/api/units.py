"""Units (单位) and their per-person quarterly meal-fund standard (就餐经费标准)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server.api.params import fen, json_body, text
from server.api.spec import doc
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_db
from server.infra.scope import require_unit_access, unit_filter
from server.registry import units as registry
from shared.errors import DomainError

bp = Blueprint("units", __name__, url_prefix="/api/v1/units")

UNIT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "quarterly_standard_fen": {"type": "integer", "description": "per person per quarter, fen"},
        "active_holders": {"type": "integer"},
        "canteens": {"type": "array", "items": {"type": "string"}},
    },
}
UNIT_IN = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "quarterly_standard_fen": {"type": "integer", "minimum": 0},
        "quarterly_standard": {"type": "string", "description": 'yuan, e.g. "300.00" (instead of _fen)'},
    },
}


@bp.get("")
@doc("Units (a clerk sees only their own)", response={"type": "array", "items": UNIT})
@requires("admin", "auditor", "clerk")
def list_units() -> Response:
    conn = get_db()
    only = unit_filter()
    rows = conn.execute("SELECT * FROM units WHERE ? IS NULL OR id = ? ORDER BY id", (only, only)).fetchall()
    return jsonify([registry.unit_json(conn, r) for r in rows])


@bp.post("")
@doc(
    "Register a unit with its per-person quarterly standard",
    request={**UNIT_IN, "required": ["name"]},
    response=UNIT,
    status=201,
)
@requires("admin")
def create_unit() -> tuple[Response, int]:
    body = json_body()
    name = text(body, "name")
    standard = fen(body, "quarterly_standard", required=False) or 0
    conn = get_db()
    with write_txn(conn):
        unit_id = text(body, "id", required=False) or registry.next_id(conn, "units", "U")
        registry.add_unit(conn, unit_id, name or "", standard)
        row = registry.get_unit(conn, unit_id)
    return jsonify(registry.unit_json(conn, row)), 201


@bp.get("/<unit_id>")
@doc("One unit", response=UNIT)
@requires("admin", "auditor", "clerk")
def get_unit(unit_id: str) -> Response:
    conn = get_db()
    return jsonify(registry.unit_json(conn, require_unit_access(conn, unit_id)))


@bp.patch("/<unit_id>")
@doc(
    "Rename a unit or change its quarterly standard (applies to later allocations)",
    request=UNIT_IN,
    response=UNIT,
)
@requires("admin")
def update_unit(unit_id: str) -> Response:
    body = json_body()
    if "id" in body:
        raise DomainError("invalid_input", "a unit's id cannot change")
    conn = get_db()
    with write_txn(conn):
        row = registry.update_unit(
            conn,
            unit_id,
            name=text(body, "name", required=False),
            quarterly_standard_fen=fen(body, "quarterly_standard", required=False),
        )
    return jsonify(registry.unit_json(conn, row))
