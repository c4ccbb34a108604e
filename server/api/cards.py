"""Cards: report lost (blocked at once), found again, replace (purses carry over)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from server.api.holders import CARD
from server.api.params import json_body, text
from server.api.spec import doc
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import require_card_access
from server.registry import cards

bp = Blueprint("cards", __name__, url_prefix="/api/v1/cards")


@bp.get("/<card_id>")
@doc("One card and its status", response=CARD)
@requires("admin", "auditor", "clerk", "diner")
def get_card(card_id: str) -> Response:
    conn = get_db()
    require_card_access(conn, card_id)
    return jsonify(cards.to_json(cards.get(conn, card_id)))


@bp.post("/<card_id>/lost")
@doc("Report a card lost (挂失): every terminal refuses it from the next delta on", response=CARD)
@requires("admin", "clerk", "diner")
def report_lost(card_id: str) -> Response:
    conn = get_db()
    require_card_access(conn, card_id)
    with write_txn(conn):
        return jsonify(cards.report_lost(conn, card_id, get_clock().now_ms()))


@bp.post("/<card_id>/found")
@doc("A lost card was found before a replacement was issued: it works again", response=CARD)
@requires("admin", "clerk")
def report_found(card_id: str) -> Response:
    conn = get_db()
    require_card_access(conn, card_id)
    with write_txn(conn):
        return jsonify(cards.report_found(conn, card_id, get_clock().now_ms()))


@bp.post("/<card_id>/replace")
@doc(
    "Issue a replacement card (补卡) to the same cardholder; both purses carry over",
    request={
        "type": "object",
        "required": ["new_card_id"],
        "properties": {"new_card_id": {"type": "string"}},
    },
    response=CARD,
    status=201,
)
@requires("admin", "clerk")
def replace(card_id: str) -> tuple[Response, int]:
    conn = get_db()
    require_card_access(conn, card_id)
    new_card_id = text(json_body(), "new_card_id") or ""
    with write_txn(conn):
        return jsonify(cards.replace(conn, card_id, new_card_id, get_clock().now_ms())), 201
