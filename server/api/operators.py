"""Operators as payees (收款人): company name and bank account for the payout file."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server.api.params import json_body
from server.api.spec import doc
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_db
from server.infra.scope import require_operator_access
from server.registry import operators
from shared.errors import DomainError

bp = Blueprint("operators", __name__, url_prefix="/api/v1/operators")

PAYEE = {"type": "object", "properties": {k: {"type": "string"} for k in ("name", *operators.FIELDS)}}


@bp.get("")
@doc("Operators and their payee details", response={"type": "array", "items": PAYEE})
@requires("admin", "auditor")
def list_operators() -> Response:
    return jsonify(operators.list_operators(get_db()))


@bp.get("/<operator>")
@doc("One operator's payee details (an operator: their own)", response=PAYEE)
@requires("admin", "auditor", "operator")
def get_operator(operator: str) -> Response:
    require_operator_access(operator)
    return jsonify(operators.payee(get_db(), operator))


@bp.put("/<operator>")
@doc(
    "Set an operator's payee details (the name is the one in canteens.operator)",
    request={"type": "object", "properties": {k: {"type": "string"} for k in operators.FIELDS}},
    response=PAYEE,
)
@requires("admin")
def put_operator(operator: str) -> Response:
    body = json_body()
    unknown = set(body) - set(operators.FIELDS)
    if unknown:  # checked here too: a key like "name" would collide with set_operator's own arguments
        raise DomainError("invalid_input", f"unknown operator fields: {sorted(unknown)}")
    conn = get_db()
    with write_txn(conn):
        return jsonify(operators.set_operator(conn, operator, **body))
