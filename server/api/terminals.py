"""Terminals: provisioning (admin) and what a terminal downloads (snapshot, deltas)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from server.api.params import query_int
from server.api.spec import doc
from server.downstream.deltas import deltas_since
from server.downstream.snapshot import build_snapshot
from server.infra.auth import requires, requires_terminal
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.registry import broker_users, terminals
from shared.errors import DomainError
from shared.protocol import DELTA_PAGE_SIZE, seal_server

bp = Blueprint("terminals", __name__, url_prefix="/api/v1/terminals")


CREDENTIALS = {
    "type": "object",
    "properties": {
        "terminal_id": {"type": "string"},
        "canteen_id": {"type": "string"},
        "secret_hex": {"type": "string"},
        "server_public_key": {"type": "string"},
    },
}


@bp.post("")
@doc(
    "Provision a terminal for a canteen (its secret is returned once)",
    request={
        "type": "object",
        "required": ["canteen_id"],
        "properties": {"canteen_id": {"type": "string"}, "terminal_id": {"type": "string"}},
    },
    response=CREDENTIALS,
    status=201,
)
@requires("admin")
def provision():  # noqa: ANN201
    body = request.get_json(silent=True) or {}
    canteen_id = body.get("canteen_id")
    if not isinstance(canteen_id, str) or not canteen_id:
        raise DomainError("invalid_input", "canteen_id required")
    key = current_app.extensions["canteen_server_key"]
    conn = get_db()
    with write_txn(conn):
        creds = terminals.provision(
            conn, canteen_id, get_clock().now_ms(), key.public_hex, body.get("terminal_id")
        )
    # the broker learns the new user once it re-reads its files (SIGHUP)
    broker_users.write_broker_files(conn, broker_users.BrokerFiles.from_config(current_app.config))
    return jsonify(creds.to_json()), 201


@bp.get("/<terminal_id>/snapshot")
@doc("The terminal's whole cache, server-signed (terminal-signed request)")
@requires_terminal
def snapshot(terminal_id: str) -> Response:
    if g.principal.terminal_id != terminal_id:
        raise DomainError("terminal_mismatch", "a terminal may only fetch its own snapshot")
    snap = build_snapshot(get_db(), get_clock().now_ms())
    key = current_app.extensions["canteen_server_key"]
    payload = seal_server("snapshot", snap.to_body(), key, get_clock().now_ms())
    return Response(payload, mimetype="application/json")


@bp.get("/<terminal_id>/deltas")
@doc(
    "Server-signed deltas after version `since` (terminal-signed request)",
    query={"since": {"type": "integer", "minimum": 0}},
    response={"type": "array", "items": {"type": "object"}},
)
@requires_terminal
def deltas(terminal_id: str) -> Response:
    """Catch up a small gap without a full snapshot: signed deltas after ``since``."""
    if g.principal.terminal_id != terminal_id:
        raise DomainError("terminal_mismatch", "a terminal may only fetch its own deltas")
    since = query_int("since", 0)
    key = current_app.extensions["canteen_server_key"]
    now = get_clock().now_ms()
    items = [
        seal_server("delta", d.to_body(), key, now).decode()
        for d in deltas_since(get_db(), since, limit=DELTA_PAGE_SIZE)
    ]
    body = "[" + ",".join(items) + "]"
    return Response(body, mimetype="application/json")
