"""Money in: quarterly allocations (a unit's clerk or the bureau) and self top-ups; and a
cardholder's own sales (what a diner rates)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from server.api.money_common import unit_scope
from server.api.params import fen, json_body, text
from server.api.spec import doc
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import require_card_access, require_holder_access, require_unit_access
from server.registry import funds
from server.sales.history import holder_history
from shared.errors import DomainError

bp = Blueprint("funds", __name__, url_prefix="/api/v1")

ALLOCATION = {
    "type": "object",
    "properties": {
        "unit_id": {"type": "string"},
        "quarter": {"type": "string"},
        "holders": {"type": "integer"},
        "per_person_fen": {"type": "integer"},
        "total_fen": {"type": "integer"},
        "late": {"type": "boolean"},
    },
}
SALE = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string"},
        "terminal_id": {"type": "string"},
        "seq": {"type": "integer"},
        "canteen_id": {"type": "string"},
        "amount_fen": {"type": "integer"},
        "subsidy_fen": {"type": "integer"},
        "self_fen": {"type": "integer"},
        "overdraft_fen": {"type": "integer"},
        "kind": {"type": "string"},
        "meal_period": {"type": ["string", "null"]},
        "occurred_at_ms": {"type": "integer"},
        "rated": {"type": "boolean"},
        "method": {"type": "string"},
        "reversed": {"type": "boolean"},
        "reversal": {
            "type": ["object", "null"],
            "description": "the reversal (冲正) that gave this sale back, if any",
            "properties": {
                "id": {"type": "string"},
                "terminal_id": {"type": "string"},
                "seq": {"type": "integer"},
                "occurred_at_ms": {"type": "integer"},
                "amount_fen": {"type": "integer"},
                "subsidy_fen": {"type": "integer"},
                "self_fen": {"type": "integer"},
                "offline": {"type": "boolean"},
            },
        },
    },
}


@bp.post("/allocations")
@doc(
    "Allocate a quarter's subsidy to every active holder of a unit (standard × headcount, or per person)",
    request={
        "type": "object",
        "required": ["unit_id", "quarter"],
        "properties": {
            "unit_id": {"type": "string"},
            "quarter": {"type": "string", "example": "2026Q1"},
            "per_person_fen": {
                "type": "integer",
                "minimum": 1,
                "description": "default: the unit's quarterly standard",
            },
            "per_person": {"type": "string", "description": "yuan instead of per_person_fen"},
        },
    },
    response=ALLOCATION,
    status=201,
)
@requires("admin", "clerk")
def allocate() -> tuple[Response, int]:
    body = json_body()
    unit_id = text(body, "unit_id") or ""
    quarter = text(body, "quarter") or ""
    per_person = fen(body, "per_person", required=False)
    conn = get_db()
    require_unit_access(conn, unit_id)
    with write_txn(conn):
        result = funds.allocate(conn, unit_id, quarter, per_person, get_clock().now_ms())
    return jsonify(result), 201


@bp.get("/allocations")
@doc(
    "Allocations made (a clerk sees their own unit's)",
    query={"quarter": {"type": "string"}},
    response={"type": "array", "items": {"type": "object"}},
)
@requires("admin", "auditor", "clerk")
def list_allocations() -> Response:
    unit = unit_scope()
    quarter = request.args.get("quarter")
    rows = (
        get_db()
        .execute(
            "SELECT unit_id, quarter, per_person_fen, headcount, total_fen, at_ms, due_ms, "
            "at_ms >= due_ms AS late FROM allocations "
            "WHERE (? IS NULL OR unit_id = ?) AND (? IS NULL OR quarter = ?) ORDER BY quarter, unit_id",
            (unit, unit, quarter, quarter),
        )
        .fetchall()
    )
    return jsonify([{**dict(r), "late": bool(r["late"])} for r in rows])


@bp.post("/topups")
@doc(
    "Self top-up onto a card's self purse (from the holder's own bank; no withdrawal exists)",
    request={
        "type": "object",
        "required": ["card_id"],
        "properties": {
            "card_id": {"type": "string"},
            "amount_fen": {"type": "integer", "minimum": 1},
            "amount": {"type": "string", "description": "yuan instead of amount_fen"},
            "ref": {"type": "string", "description": "the bank's transaction id; a repeated ref is refused"},
        },
    },
    response={
        "type": "object",
        "properties": {"card_id": {"type": "string"}, "self_fen": {"type": "integer"}},
    },
    status=201,
)
@requires("admin")
def topup() -> tuple[Response, int]:
    body = json_body()
    card_id = text(body, "card_id") or ""
    amount = fen(body, "amount")
    ref = text(body, "ref", required=False)
    conn = get_db()
    require_card_access(conn, card_id)
    with write_txn(conn):
        balance = funds.topup(conn, card_id, amount or 0, get_clock().now_ms(), ref=ref)
    return jsonify({"card_id": card_id, "self_fen": balance}), 201


@bp.get("/holders/<holder_id>/sales")
@doc(
    "A cardholder's sales, newest first, each with its reversal (冲正) if any (a diner sees their own; "
    "rate one with POST /ratings)",
    query={"limit": {"type": "integer", "minimum": 1, "maximum": 500}},
    response={"type": "array", "items": SALE},
)
@requires("admin", "auditor", "clerk", "diner")
def holder_sales(holder_id: str) -> Response:
    conn = get_db()
    require_holder_access(conn, holder_id)
    try:
        limit = min(max(int(request.args.get("limit", "50")), 1), 500)
    except ValueError as exc:
        raise DomainError("invalid_input", "limit must be a number") from exc
    return jsonify(holder_history(conn, holder_id, limit))
