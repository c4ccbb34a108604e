"""Quality: the units' scores and the canteens' pay bands (they set what settlement
withholds), the diners' ratings, and the quarterly quality report."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server.api.money_common import QUARTER_QUERY, canteen_filter, quarter_arg
from server.api.params import actor, json_body, text
from server.api.spec import doc
from server.closing import quality
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal, require_canteen_access
from shared.errors import DomainError

bp = Blueprint("quality", __name__, url_prefix="/api/v1")

SCORE = {
    "type": "object",
    "properties": {
        "canteen_id": {"type": "string"},
        "unit_id": {"type": "string"},
        "quarter": {"type": "string"},
        "score": {"type": "integer"},
        "pay_pct": {"type": "integer"},
    },
}


def _int(body: dict, name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DomainError("invalid_input", f"{name} must be an integer")
    return value


@bp.put("/canteens/<canteen_id>/quality-scores/<quarter>")
@doc(
    "The owning unit's quality score (0–100) of a canteen's operator for a quarter; final once settled",
    request={
        "type": "object",
        "required": ["score"],
        "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
    },
    response=SCORE,
)
@requires("admin", "clerk")
def put_score(canteen_id: str, quarter: str) -> Response:
    conn = get_db()
    require_canteen_access(conn, canteen_id)  # a clerk: only their own unit's canteens
    score = _int(json_body(), "score")
    with write_txn(conn):
        result = quality.set_score(
            conn, canteen_id, str(quarter_arg(quarter)), score, get_clock().now_ms(), actor()
        )
    return jsonify(result)


@bp.put("/canteens/<canteen_id>/quality-bands")
@doc(
    "A canteen's quality bands: [[min_score, pay_pct], …] (default: pay 100%)",
    request={
        "type": "object",
        "required": ["bands"],
        "properties": {
            "bands": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                "example": [[90, 100], [80, 98], [0, 95]],
            }
        },
    },
    response={"type": "object", "properties": {"canteen_id": {"type": "string"}, "bands": {"type": "array"}}},
)
@requires("admin")
def put_bands(canteen_id: str) -> Response:
    conn = get_db()
    body = json_body()
    with write_txn(conn):
        bands = quality.set_bands(conn, canteen_id, body.get("bands"))
    return jsonify({"canteen_id": canteen_id, "bands": [list(b) for b in bands]})


@bp.get("/quality")
@doc(
    "Quarterly quality report: scores, pay %, and the diners' average ratings per canteen",
    query=QUARTER_QUERY,
    response={"type": "object"},
)
@requires("admin", "auditor", "clerk", "operator")
def quality_report() -> Response:
    conn = get_db()
    return jsonify(quality.quality_report(conn, str(quarter_arg()), canteen_filter(conn)))


@bp.post("/ratings")
@doc(
    "A diner rates one of their own sales (service and food 1–5, optional comment), once",
    request={
        "type": "object",
        "required": ["sale_uuid", "service", "food"],
        "properties": {
            "sale_uuid": {"type": "string"},
            "service": {"type": "integer", "minimum": 1, "maximum": 5},
            "food": {"type": "integer", "minimum": 1, "maximum": 5},
            "comment": {"type": "string", "maxLength": 200},
        },
    },
    response={"type": "object"},
    status=201,
)
@requires("diner")
def rate() -> tuple[Response, int]:
    body = json_body()
    sale_uuid = text(body, "sale_uuid") or ""
    service, food = _int(body, "service"), _int(body, "food")
    comment = body.get("comment") or ""
    if not isinstance(comment, str):
        raise DomainError("invalid_input", "comment must be text")
    conn = get_db()
    with write_txn(conn):
        result = quality.rate(
            conn, principal().holder_id or "", sale_uuid, service, food, comment, get_clock().now_ms()
        )
    return jsonify(result), 201
