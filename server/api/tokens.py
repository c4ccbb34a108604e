"""API tokens (admin issues them) and ``/me``: who the caller's token speaks for."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server.api.params import json_body, text
from server.api.spec import doc
from server.infra.auth import ROLES, create_token, requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal

bp = Blueprint("tokens", __name__, url_prefix="/api/v1")


@bp.post("/tokens")
@doc(
    "Issue a token (shown once). Clerks need unit_id, operators operator, diners holder_id",
    request={
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": list(ROLES)},
            "unit_id": {"type": "string"},
            "operator": {"type": "string"},
            "holder_id": {"type": "string"},
            "label": {"type": "string"},
        },
    },
    response={"type": "object", "properties": {"token": {"type": "string"}, "role": {"type": "string"}}},
    status=201,
)
@requires("admin")
def issue() -> tuple[Response, int]:
    body = json_body()
    role = text(body, "role") or ""
    conn = get_db()
    with write_txn(conn):
        token = create_token(
            conn,
            role,
            get_clock().now_ms(),
            unit_id=text(body, "unit_id", required=False),
            operator=text(body, "operator", required=False),
            holder_id=text(body, "holder_id", required=False),
            label=text(body, "label", required=False) or "",
        )
    return jsonify({"token": token, "role": role}), 201


@bp.get("/me")
@doc(
    "Who this token speaks for: role and scope",
    response={
        "type": "object",
        "properties": {
            "role": {"type": "string"},
            "unit_id": {"type": ["string", "null"]},
            "operator": {"type": ["string", "null"]},
            "holder_id": {"type": ["string", "null"]},
        },
    },
)
@requires(*ROLES)
def me() -> Response:
    who = principal()
    return jsonify(
        {"role": who.role, "unit_id": who.unit_id, "operator": who.operator, "holder_id": who.holder_id}
    )
