"""Cardholders: the roster import, one holder, leavers, and their refund requests.

A clerk works on their own unit's staff only; a diner sees (and may ask a refund for)
only themselves. Purses are shown in fen, read from the ledger.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from server.api.params import actor_id, flag, json_body, text, uploaded_file
from server.api.spec import doc
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal, require_holder_access, require_unit_access
from server.registry import cards, leavers, name_search, pins, roster
from server.registry.people import holder_json
from shared.errors import DomainError

bp = Blueprint("holders", __name__, url_prefix="/api/v1")

CARD = {
    "type": "object",
    "properties": {
        "card_id": {"type": "string"},
        "holder_id": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "lost", "retired"]},
        "changed_at_ms": {"type": ["integer", "null"]},
        "replaced_by": {"type": ["string", "null"]},
    },
}
ACCOUNT_CHANGE = {
    "type": "object",
    "properties": {
        "at_ms": {"type": "integer"},
        "changed_by": {"type": "string"},
        "old_masked": {"type": ["string", "null"]},
        "new_masked": {"type": "string"},
    },
}
HOLDER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "unit_id": {"type": "string"},
        "name": {"type": "string"},
        "staff_no": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": ["active", "left"]},
        "left_at_ms": {"type": ["integer", "null"]},
        "blocked": {"type": "boolean"},
        "subsidy_fen": {"type": "integer"},
        "self_fen": {"type": "integer"},
        "bank_account": {"type": ["string", "null"], "description": "masked"},
        "bank_account_changes": {"type": "array", "items": ACCOUNT_CHANGE},
        "cards": {"type": "array", "items": CARD},
    },
}
REFUND = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "holder_id": {"type": "string"},
        "unit_id": {"type": "string"},
        "bank_account": {"type": "string"},
        "status": {"type": "string", "enum": ["pending", "approved", "rejected"]},
        "amount_fen": {"type": ["integer", "null"]},
        "self_fen": {"type": "integer"},
        "requested_at_ms": {"type": "integer"},
        "requested_by": {"type": "string"},
        "decided_at_ms": {"type": ["integer", "null"]},
        "decided_by": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "first_approved_by": {"type": ["string", "null"]},
        "first_approved_at_ms": {"type": ["integer", "null"]},
        "second_approval_needed": {
            "type": "boolean",
            "description": "the account changed recently: two different administrators must approve",
        },
        "account_changes": {"type": "array", "items": ACCOUNT_CHANGE},
    },
}


@bp.post("/roster/import")
@doc(
    "Import a staff roster (单位名称, 姓名, 工号, 卡号[, 银行卡号]) as CSV; all or nothing, "
    "errors by line; re-import updates and never duplicates",
    query={"dry_run": {"type": "boolean"}},
    request={"type": "string", "format": "binary"},
    request_type="text/csv",
    response={
        "type": "object",
        "properties": {"holders": {"type": "array", "items": {"type": "object"}}},
        "additionalProperties": {"type": "integer"},
    },
)
@requires("admin", "clerk")
def import_roster() -> Response:
    data = uploaded_file()
    who = principal()
    conn = get_db()
    with write_txn(conn):
        report = roster.import_roster(
            conn,
            data,
            get_clock().now_ms(),
            unit_scope=who.unit_id if who.role == "clerk" else None,
            dry_run=flag("dry_run"),
            changed_by=actor_id(),
        )
    return jsonify(report)


@bp.get("/units/<unit_id>/holders")
@doc(
    "A unit's cardholders with their purses",
    query={"status": {"type": "string", "enum": ["active", "left"]}},
    response={"type": "array", "items": HOLDER},
)
@requires("admin", "auditor", "clerk")
def list_holders(unit_id: str) -> Response:
    conn = get_db()
    require_unit_access(conn, unit_id)
    status = request.args.get("status")
    rows = conn.execute(
        "SELECT * FROM holders WHERE unit_id = ? AND (? IS NULL OR status = ?) ORDER BY staff_no, id",
        (unit_id, status, status),
    ).fetchall()
    return jsonify([holder_json(conn, r) for r in rows])


@bp.post("/units/<unit_id>/holders")
@doc(
    "Add one cardholder with their first card",
    request={
        "type": "object",
        "required": ["name", "staff_no", "card_id"],
        "properties": {
            "name": {"type": "string"},
            "staff_no": {"type": "string"},
            "card_id": {"type": "string"},
        },
    },
    response=HOLDER,
    status=201,
)
@requires("admin", "clerk")
def create_holder(unit_id: str) -> tuple[Response, int]:
    conn = get_db()
    require_unit_access(conn, unit_id)
    body = json_body()
    with write_txn(conn):
        holder_id = roster.add_one(
            conn,
            unit_id,
            text(body, "name") or "",
            text(body, "staff_no") or "",
            text(body, "card_id") or "",
            get_clock().now_ms(),
        )
        row = conn.execute("SELECT * FROM holders WHERE id = ?", (holder_id,)).fetchone()
    return jsonify(holder_json(conn, row)), 201


@bp.get("/holders/<holder_id>")
@doc("One cardholder: purses, cards, status (a diner: only themselves)", response=HOLDER)
@requires("admin", "auditor", "clerk", "diner")
def get_holder(holder_id: str) -> Response:
    conn = get_db()
    return jsonify(holder_json(conn, require_holder_access(conn, holder_id)))


@bp.patch("/holders/<holder_id>")
@doc(
    "Correct a name or record the person's own bank account (for refunds)",
    request={
        "type": "object",
        "properties": {"name": {"type": "string"}, "bank_account": {"type": "string"}},
    },
    response=HOLDER,
)
@requires("admin", "clerk")
def update_holder(holder_id: str) -> Response:
    conn = get_db()
    require_holder_access(conn, holder_id)
    body = json_body()
    unknown = set(body) - {"name", "bank_account"}
    if unknown:
        raise DomainError("invalid_input", f"unknown field(s) {', '.join(sorted(unknown))}")
    with write_txn(conn):
        if "name" in body:
            name_search.rename(conn, holder_id, text(body, "name") or "")
        if "bank_account" in body:
            leavers.set_bank_account(
                conn,
                holder_id,
                text(body, "bank_account") or "",
                now_ms=get_clock().now_ms(),
                changed_by=actor_id(),
            )
        row = conn.execute("SELECT * FROM holders WHERE id = ?", (holder_id,)).fetchone()
    return jsonify(holder_json(conn, row))


@bp.post("/holders/<holder_id>/cards")
@doc(
    "Issue a card to a cardholder who has none active",
    request={"type": "object", "required": ["card_id"], "properties": {"card_id": {"type": "string"}}},
    response=CARD,
    status=201,
)
@requires("admin", "clerk")
def issue_card(holder_id: str) -> tuple[Response, int]:
    conn = get_db()
    require_holder_access(conn, holder_id)
    card_id = text(json_body(), "card_id") or ""
    with write_txn(conn):
        card = cards.issue(conn, holder_id, card_id, get_clock().now_ms())
    return jsonify(card), 201


@bp.post("/holders/<holder_id>/leave")
@doc(
    "Record that a cardholder left: cards retired, subsidy returned to the unit, self purse kept",
    response={
        "type": "object",
        "properties": {
            "subsidy_returned_fen": {"type": "integer"},
            "self_fen": {"type": "integer"},
            "cards_retired": {"type": "array", "items": {"type": "string"}},
        },
    },
)
@requires("admin", "clerk")
def leave(holder_id: str) -> Response:
    conn = get_db()
    require_holder_access(conn, holder_id)
    with write_txn(conn):
        result = leavers.leave(conn, holder_id, get_clock().now_ms())
    return jsonify(result)


@bp.post("/holders/<holder_id>/refunds")
@doc(
    "A leaver asks for their self purse to be paid to their own bank account (admin approves)",
    request={"type": "object", "properties": {"bank_account": {"type": "string"}}},
    response=REFUND,
    status=201,
)
@requires("admin", "clerk", "diner")
def request_refund(holder_id: str) -> tuple[Response, int]:
    conn = get_db()
    require_holder_access(conn, holder_id)
    account = text(json_body(), "bank_account", required=False)
    with write_txn(conn):
        req = leavers.request_refund(conn, holder_id, get_clock().now_ms(), actor_id(), bank_account=account)
    return jsonify(req), 201


@bp.get("/refunds")
@doc(
    "Refund requests (a clerk: their unit's)",
    query={"status": {"type": "string", "enum": ["pending", "approved", "rejected"]}},
    response={"type": "array", "items": REFUND},
)
@requires("admin", "auditor", "clerk")
def list_refunds() -> Response:
    who = principal()
    unit = who.unit_id if who.role == "clerk" else None
    return jsonify(
        leavers.list_requests(
            get_db(), unit_id=unit, status=request.args.get("status"), now_ms=get_clock().now_ms()
        )
    )


@bp.post("/refunds/<int:request_id>/approve")
@doc("Approve a refund: the whole self purse goes to the registered own bank account", response=REFUND)
@requires("admin")
def approve_refund(request_id: int) -> Response:
    conn = get_db()
    with write_txn(conn):
        return jsonify(leavers.approve_refund(conn, request_id, get_clock().now_ms(), actor_id()))


@bp.post("/refunds/<int:request_id>/reject")
@doc(
    "Reject a refund request, saying why",
    request={"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
    response=REFUND,
)
@requires("admin")
def reject_refund(request_id: int) -> Response:
    reason = text(json_body(), "reason") or ""
    conn = get_db()
    with write_txn(conn):
        return jsonify(leavers.reject_refund(conn, request_id, get_clock().now_ms(), actor_id(), reason))


@bp.put("/holders/<holder_id>/pin")
@doc(
    "Set the payment PIN for sales above the no-PIN limit: a diner their own (with the old "
    "PIN when one is set), a clerk of the holder's unit or an admin resets it",
    request={
        "type": "object",
        "required": ["pin"],
        "properties": {
            "pin": {"type": "string", "pattern": "^[0-9]{6}$"},
            "old_pin": {"type": "string", "description": "a diner changing a PIN already set"},
        },
    },
    response={
        "type": "object",
        "properties": {"holder_id": {"type": "string"}, "pin_set": {"type": "boolean"}},
    },
)
@requires("admin", "clerk", "diner")
def set_pin(holder_id: str) -> Response:
    conn = get_db()
    require_holder_access(conn, holder_id)
    body = json_body()
    unknown = set(body) - {"pin", "old_pin"}
    if unknown:
        raise DomainError("invalid_input", f"unknown field(s) {', '.join(sorted(unknown))}")
    pin = pins.check_pin_format(body.get("pin"))
    now = get_clock().now_ms()
    wrong: DomainError | None = None
    with write_txn(conn):
        if principal().role == "diner":
            wrong = pins.set_own_pin(conn, holder_id, pin, body.get("old_pin"), now, actor_id())
        else:
            pins.set_pin(conn, holder_id, pin, now, actor_id())
    if wrong is not None:  # raised after the txn: the failed try is kept
        raise wrong
    return jsonify({"holder_id": holder_id, "pin_set": True})
