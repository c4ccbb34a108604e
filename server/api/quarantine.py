"""Quarantined sales: sales the server held back as implausible, and the admin's decision.

``GET /quarantine`` lists them (admin and auditor: all; an operator: their canteens',
with the admin's reason when one was rejected) with the counts per state and today's
suspect terminals. An admin accepts one (applied now, once) or rejects it with a reason.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from server.api.money_common import canteen_filter
from server.api.params import json_body, text
from server.api.spec import doc
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.sales import quarantine

bp = Blueprint("quarantine", __name__, url_prefix="/api/v1")

LISTING = {
    "type": "object",
    "properties": {
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "amounts_fen": {"type": "object", "additionalProperties": {"type": "integer"}},
        "suspect_terminals": {"type": "array", "items": {"type": "object"}},
        "sales": {"type": "array", "items": {"type": "object"}},
    },
}
ITEM = {"type": "object"}


@bp.get("/quarantine")
@doc(
    "Sales held back for review (too large, wrong price, misdated …), counts, suspect terminals",
    query={"state": {"type": "string", "enum": list(quarantine.STATES)}},
    response=LISTING,
)
@requires("admin", "auditor", "operator")
def listing() -> Response:
    conn = get_db()
    return jsonify(
        quarantine.listing(
            conn, get_clock().now_ms(), state=request.args.get("state") or None, canteens=canteen_filter(conn)
        )
    )


@bp.post("/quarantine/<terminal_id>/<int:seq>/accept")
@doc(
    "Accept a held sale: it is applied now, once",
    request={"type": "object", "properties": {"note": {"type": "string"}}},
    response=ITEM,
)
@requires("admin")
def accept(terminal_id: str, seq: int) -> Response:
    note = text(json_body(), "note", required=False)
    conn = get_db()
    with write_txn(conn):
        done = quarantine.accept(conn, terminal_id, seq, get_clock().now_ms(), "admin", note)
    return jsonify(done)


@bp.post("/quarantine/<terminal_id>/<int:seq>/reject")
@doc(
    "Reject a held sale for good, with the reason its canteen is shown",
    request={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
    response=ITEM,
)
@requires("admin")
def reject(terminal_id: str, seq: int) -> Response:
    reason = text(json_body(), "reason")
    conn = get_db()
    with write_txn(conn):
        done = quarantine.reject(conn, terminal_id, seq, get_clock().now_ms(), "admin", reason or "")
    return jsonify(done)
