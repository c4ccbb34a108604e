"""Digital RMB (数字人民币): the gateway's result callback, refunds, and takings per method."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from server.api.params import query_int
from server.api.spec import doc
from server.infra.auth import public, requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.ecny_flask import gateway
from server.sales import ecny, ecny_topups
from shared.errors import DomainError

bp = Blueprint("ecny", __name__, url_prefix="/api/v1/ecny")


def _operator_may_see(canteen_id: str | None) -> None:
    if g.principal.role != "operator":
        return
    row = get_db().execute("SELECT operator FROM canteens WHERE id = ?", (canteen_id or "",)).fetchone()
    if row is None or row[0] != g.principal.operator:
        raise DomainError("forbidden", "an operator sees only their own canteens")


@bp.post("/notify")
@doc(
    "The gateway's signed result callback (header X-Ecny-Signature: HMAC-SHA256 of the body)",
    request={"type": "object", "required": ["order_no", "trade_no", "amount_fen", "status", "at_ms"]},
    response={"type": "object", "properties": {"ok": {"type": "boolean"}}},
)
@public  # no token: the gateway signs the body instead
def notify():  # noqa: ANN201
    try:
        note = gateway().verify_notification(request.get_data(), request.headers.get("X-Ecny-Signature", ""))
    except DomainError as exc:
        if exc.code != "bad_signature":
            raise
        raise DomainError("ecny_bad_callback", exc.detail) from exc
    conn = get_db()
    with write_txn(conn):
        ecny.record_notification(conn, note, get_clock().now_ms())
        ecny_topups.on_notification(conn, note, get_clock().now_ms())  # a diner's top-up: credit it
    return jsonify({"ok": True})


@bp.post("/refunds")
@doc(
    "Refund (part of) a digital RMB sale through the gateway",
    request={
        "type": "object",
        "required": ["order_no", "amount_fen"],
        "properties": {
            "order_no": {"type": "string"},
            "amount_fen": {"type": "integer", "minimum": 1},
            "reason": {"type": "string"},
        },
    },
    status=201,
)
@requires("admin", "operator")
def refund():  # noqa: ANN201
    body = request.get_json(silent=True) or {}
    order_no = body.get("order_no")
    if not isinstance(order_no, str) or not order_no:
        raise DomainError("invalid_input", "order_no required")
    conn = get_db()
    _operator_may_see(ecny.sale_of(conn, order_no)["canteen_id"])
    done = ecny.refund(
        conn,
        gateway(),
        order_no,
        body.get("amount_fen"),
        get_clock().now_ms(),
        g.principal.role,
        str(body.get("reason", ""))[:200],
    )
    return jsonify(done), 201


@bp.get("/totals")
@doc(
    "Takings per payment method (card, qr, face, ecny) with digital RMB refunds, "
    "and the gateway reconciliation",
    query={
        "canteen_id": {"type": "string"},
        "from_ms": {"type": "integer", "x-required": True},
        "to_ms": {"type": "integer", "x-required": True},
    },
)
@requires("admin", "operator", "auditor")
def totals():  # noqa: ANN201
    from_ms, to_ms = query_int("from_ms"), query_int("to_ms")
    canteen_id = request.args.get("canteen_id") or None
    _operator_may_see(canteen_id)
    conn = get_db()
    out = ecny.method_totals(conn, canteen_id, from_ms, to_ms)
    if g.principal.role != "operator":
        out["ecny_reconciliation"] = ecny.reconcile(conn)
    return jsonify(out)
