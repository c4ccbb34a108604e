"""API tokens (admin issues, lists and revokes them) and ``/me``: who the caller's token
speaks for. A listing never shows a token's secret: only its public id, role, scope, label
and dates."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server.api.params import json_body, text
from server.api.spec import doc
from server.infra.auth import MAX_EXPIRY_DAYS, ROLES, issue_token, list_tokens, requires, revoke_token_id
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal

bp = Blueprint("tokens", __name__, url_prefix="/api/v1")

TOKEN_ENTRY = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "role": {"type": "string"},
        "unit_id": {"type": ["string", "null"]},
        "operator": {"type": ["string", "null"]},
        "holder_id": {"type": ["string", "null"]},
        "label": {"type": "string"},
        "created_at_ms": {"type": "integer"},
        "expires_at_ms": {"type": ["integer", "null"]},
        "revoked_at_ms": {"type": ["integer", "null"]},
    },
}


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
            "expires_days": {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRY_DAYS},
        },
    },
    response={
        "type": "object",
        "properties": {
            "token": {"type": "string"},
            "id": {"type": "string"},
            "role": {"type": "string"},
            "expires_at_ms": {"type": "integer"},
        },
    },
    status=201,
)
@requires("admin")
def issue() -> tuple[Response, int]:
    body = json_body()
    role = text(body, "role") or ""
    conn = get_db()
    with write_txn(conn):
        issued = issue_token(
            conn,
            role,
            get_clock().now_ms(),
            unit_id=text(body, "unit_id", required=False),
            operator=text(body, "operator", required=False),
            holder_id=text(body, "holder_id", required=False),
            label=text(body, "label", required=False) or "",
            expires_days=body.get("expires_days"),
        )
    return jsonify(
        {"token": issued.token, "id": issued.id, "role": role, "expires_at_ms": issued.expires_at_ms}
    ), 201


@bp.get("/tokens")
@doc(
    "Every token: id, role, scope, label, issued, expires, revoked (never the secret)",
    response={"type": "array", "items": TOKEN_ENTRY},
)
@requires("admin")
def listing() -> Response:
    return jsonify(list_tokens(get_db()))


@bp.delete("/tokens/<token_id>")
@doc("Revoke a token by its id (at once; revoking it again changes nothing)", response=TOKEN_ENTRY)
@requires("admin")
def revoke(token_id: str) -> Response:
    conn = get_db()
    with write_txn(conn):
        entry = revoke_token_id(conn, token_id, get_clock().now_ms())
    return jsonify(entry)


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
