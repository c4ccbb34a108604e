"""Terminals: provisioning (admin), what a terminal downloads (snapshot, deltas, an offered
update bundle), the online PIN check for a sale above the no-PIN limit, and the operator's
day close."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from server.api.params import json_body, query_int
from server.api.spec import doc
from server.api.terminal_common import own_terminal, with_release_key
from server.closing import day_closes
from server.downstream.deltas import deltas_since
from server.downstream.snapshot import build_snapshot
from server.infra.auth import requires, requires_terminal
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.registry import broker_users, pins, terminals, updates
from shared.errors import DomainError
from shared.protocol import DELTA_PAGE_SIZE, seal_server
from shared.protocol.messages import MAX_SALE_FEN

bp = Blueprint("terminals", __name__, url_prefix="/api/v1/terminals")


CREDENTIALS = {
    "type": "object",
    "properties": {
        "terminal_id": {"type": "string"},
        "canteen_id": {"type": "string"},
        "secret_hex": {"type": "string"},
        "server_public_key": {"type": "string"},
        "release_public_key": {"type": "string", "description": "pinned for signed updates, when one exists"},
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
    # the broker learns the new user once it re-reads its files (MQTT_RELOAD_COMMAND, or SIGHUP)
    broker_users.apply(conn, current_app.config)
    return jsonify(with_release_key(creds.to_json())), 201


@bp.get("/<terminal_id>/snapshot")
@doc("The terminal's whole cache, server-signed (terminal-signed request)")
@requires_terminal
def snapshot(terminal_id: str) -> Response:
    own_terminal(terminal_id, "a terminal may only fetch its own snapshot")
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
    own_terminal(terminal_id, "a terminal may only fetch its own deltas")
    since = query_int("since", 0)
    key = current_app.extensions["canteen_server_key"]
    now = get_clock().now_ms()
    items = [
        seal_server("delta", d.to_body(), key, now).decode()
        for d in deltas_since(get_db(), since, limit=DELTA_PAGE_SIZE)
    ]
    body = "[" + ",".join(items) + "]"
    return Response(body, mimetype="application/json")


@bp.get("/<terminal_id>/updates/<bundle>")
@doc("An update bundle offered to this terminal, `<kind>-<version>` (terminal-signed request)")
@requires_terminal
def update_bundle(terminal_id: str, bundle: str) -> Response:
    """The bundle's bytes as signed by the release key; the terminal checks them itself."""
    own_terminal(terminal_id, "a terminal may only fetch its own updates")
    path = updates.bundle_for(get_db(), current_app.config["UPDATES_DIR"], terminal_id, bundle)
    return send_file(path, mimetype="application/x-tar", max_age=0)


PIN_CHECK_RESULT = {
    "type": "object",
    "properties": {
        "result": {
            "type": "string",
            "enum": ["ok", "wrong", "locked", "not_set", "card_blocked", "card_unknown"],
        },
        "approval_id": {"type": "string", "description": "ok: name it in the sale (pin_approval)"},
        "expires_at_ms": {"type": "integer"},
        "tries_left": {"type": "integer"},
        "locked_until_ms": {"type": "integer"},
    },
}


@bp.post("/<terminal_id>/pin-check")
@doc(
    "Check a cardholder's payment PIN for one sale above the no-PIN limit (terminal-signed "
    "request; the query names the body's SHA-256, `body=<hex>`, so the signature covers it)",
    request={
        "type": "object",
        "required": ["card_id", "pin", "amount_fen"],
        "properties": {
            "card_id": {"type": "string"},
            "pin": {"type": "string", "pattern": "^[0-9]{6}$"},
            "amount_fen": {"type": "integer", "minimum": 1},
        },
    },
    query={"body": {"type": "string"}},
    response=PIN_CHECK_RESULT,
)
@requires_terminal
def pin_check(terminal_id: str) -> Response:
    """ok (with an approval bound to this card, terminal and amount), wrong (tries left),
    locked (until when), not_set; the card's own state first. The PIN is never logged."""
    own_terminal(terminal_id, "a terminal may only check PINs for itself")
    body = _signed_json_body()
    card_id, pin, amount = body.get("card_id"), body.get("pin"), body.get("amount_fen")
    if (
        set(body) != {"card_id", "pin", "amount_fen"}
        or not isinstance(card_id, str)
        or not isinstance(pin, str)
    ):
        raise DomainError("invalid_input", "card_id, pin and amount_fen required")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_SALE_FEN:
        raise DomainError("invalid_input", "amount_fen: a positive integer")
    conn, now = get_db(), get_clock().now_ms()
    with write_txn(conn):
        row = conn.execute(
            "SELECT c.status, h.id, h.blocked FROM cards c JOIN holders h ON h.id = c.holder_id "
            "WHERE c.card_id = ?",
            (card_id,),
        ).fetchone()
        if row is None:
            return jsonify({"result": "card_unknown"})
        status, holder_id, blocked = row
        if status != "active" or blocked:
            return jsonify({"result": "card_blocked"})
        check = pins.verify(conn, holder_id, pin, now)
        if check.result != "ok":
            out: dict[str, object] = {"result": check.result}
            if check.result == "wrong":
                out["tries_left"] = check.tries_left
            if check.locked_until_ms is not None:
                out["locked_until_ms"] = check.locked_until_ms
            return jsonify(out)
        approval = pins.issue_approval(conn, holder_id, card_id, terminal_id, amount, now)
    return jsonify(
        {"result": "ok", "approval_id": approval.approval_id, "expires_at_ms": approval.expires_at_ms}
    )


def _signed_json_body() -> dict[str, Any]:
    """The JSON body of a terminal-signed request whose query names the body's SHA-256
    (``body=<hex>``), so the request signature covers the body too."""
    raw = request.get_data()
    claimed = request.args.get("body", "")
    if not claimed.isascii() or not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), claimed):
        raise DomainError("bad_signature", "the body does not match the signed body hash")
    return json_body()


DAY_CLOSE_RESULT = {
    "type": "object",
    "properties": {
        "number": {"type": "integer"},
        "status": {"type": "string", "enum": list(day_closes.STATUSES)},
        "code": {"type": ["string", "null"], "description": "day_close_mismatch when the figures differ"},
        "missing": {"type": "integer", "description": "sales of the range the server has not received"},
        "differences": {"type": "array", "items": {"type": "object"}},
    },
}


@bp.post("/<terminal_id>/day-closes")
@doc(
    "Send the operator's day close (Z-report) of this terminal; the server keeps it once per "
    "number and compares it with the sales it holds (terminal-signed request; the query names "
    "the body's SHA-256, `body=<hex>`)",
    request={"type": "object", "required": ["number", "seq_from", "seq_to", "sales"]},
    query={"body": {"type": "string"}},
    response=DAY_CLOSE_RESULT,
)
@requires_terminal
def day_close(terminal_id: str) -> Response:
    own_terminal(terminal_id, "a terminal may only send its own day closes")
    body = _signed_json_body()
    conn = get_db()
    with write_txn(conn):
        answer = day_closes.receive(conn, terminal_id, body, get_clock().now_ms())
    return jsonify(answer)
