"""QR payment: credentials (clerks), incidents (auditors), and the diner's phone page.

``/api/v1/qr/…`` is the JSON API; ``/qr/<credential>/<access>`` is the small HTML page the
diner keeps on their phone: it shows a fresh signed code (valid 60 s) and reloads itself
before the code runs out. The page needs no login: its link is the credential's secret
(see :mod:`server.sales.qr_codes`), handed over by a clerk.
"""

from __future__ import annotations

import hmac
import secrets
from html import escape

from flask import Blueprint, Response, current_app, g, jsonify, request

from server.api.params import query_int
from server.api.spec import doc
from server.downstream.deltas import record_delta
from server.infra.auth import public, requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.headers import page_csp
from server.registry.units import holder_of_card
from server.sales import qr_codes
from server.sales.incidents import incidents
from server.sales.qr_render import svg
from shared.errors import DomainError, message
from shared.money import format_fen
from shared.paycode import VALIDITY_MS

bp = Blueprint("qr", __name__, url_prefix="/api/v1/qr")
page = Blueprint("qr_page", __name__, url_prefix="/qr")

CREDENTIAL = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "holder_id": {"type": "string"},
        "card_id": {"type": "string"},
        "public_key": {"type": "string"},
        "issued_at_ms": {"type": "integer"},
        "expires_at_ms": {"type": "integer"},
        "offline_allowance_fen": {"type": "integer"},
        "page_path": {"type": "string"},
    },
}


def _secret() -> bytes:
    return qr_codes.qr_secret(current_app.extensions["canteen_server_key"])


def _may_manage(card_id: str) -> None:
    if g.principal.role == "clerk":
        card = holder_of_card(get_db(), card_id)
        if card["unit_id"] != g.principal.unit_id:
            raise DomainError("forbidden", "a clerk manages only their own unit's cardholders")
    if g.principal.role == "diner":
        card = holder_of_card(get_db(), card_id)
        if card["holder_id"] != g.principal.holder_id:
            raise DomainError("forbidden", "a diner manages only their own card")


def _int(body: dict, key: str, default: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DomainError("invalid_input", f"{key} must be an integer")
    return value


@bp.post("/credentials")
@doc(
    "Issue a QR payment credential to a card's holder (replaces their previous one)",
    request={
        "type": "object",
        "required": ["card_id"],
        "properties": {
            "card_id": {"type": "string"},
            "valid_days": {"type": "integer", "minimum": 1, "maximum": 366},
            "offline_allowance_fen": {"type": "integer", "minimum": 0},
        },
    },
    response=CREDENTIAL,
    status=201,
)
@requires("admin", "clerk", "diner")
def issue():  # noqa: ANN201
    body = request.get_json(silent=True) or {}
    card_id = body.get("card_id")
    if not isinstance(card_id, str) or not card_id:
        raise DomainError("invalid_input", "card_id required")
    _may_manage(card_id)
    conn = get_db()
    secret = _secret()
    with write_txn(conn):
        cred = qr_codes.issue(
            conn,
            secret,
            card_id,
            get_clock().now_ms(),
            valid_days=_int(body, "valid_days", qr_codes.DEFAULT_VALID_DAYS),
            offline_allowance_fen=_int(body, "offline_allowance_fen", qr_codes.DEFAULT_OFFLINE_ALLOWANCE_FEN),
        )
    return jsonify(
        {**cred.to_json(), "page_path": f"/qr/{cred.id}/{qr_codes.page_access(secret, cred.id)}"}
    ), 201


@bp.post("/credentials/<credential_id>/revoke")
@doc(
    "Revoke a QR payment credential (lost phone); terminals refuse its codes from now on", response=CREDENTIAL
)
@requires("admin", "clerk", "diner")
def revoke(credential_id: str):  # noqa: ANN201
    conn = get_db()
    _may_manage(qr_codes.get(conn, credential_id).card_id)
    now = get_clock().now_ms()
    with write_txn(conn):
        change = qr_codes.revoke(conn, credential_id, now, "revoked by " + g.principal.role)
        if change is not None:
            record_delta(conn, [change], now)
    return jsonify(qr_codes.get(conn, credential_id).to_json())


@bp.get("/incidents")
@doc(
    "QR codes and NFC SUN messages spent twice (and codes the server could not verify)",
    query={"since_ms": {"type": "integer", "minimum": 0}},
    response={"type": "array", "items": {"type": "object"}},
)
@requires("admin", "auditor")
def list_incidents():  # noqa: ANN201
    since = query_int("since_ms", 0)
    return jsonify(incidents(get_db(), since))


def _code_for(credential_id: str, access: str) -> tuple[str, qr_codes.Credential, int]:
    secret = _secret()
    # compare_digest raises TypeError on a non-ASCII str: such an access code is simply wrong
    if not access.isascii() or not hmac.compare_digest(qr_codes.page_access(secret, credential_id), access):
        raise DomainError("not_found", "no such payment page")
    conn = get_db()
    now = get_clock().now_ms()
    with write_txn(conn):
        code, cred = qr_codes.next_code(conn, secret, credential_id, now)
    return code, cred, now


@bp.get("/code/<credential_id>/<access>")
@doc(
    "A fresh signed payment code for the phone (the page link's secret is the credential)",
    response={
        "type": "object",
        "properties": {"code": {"type": "string"}, "valid_until_ms": {"type": "integer"}},
    },
)
@public
def code(credential_id: str, access: str):  # noqa: ANN201
    text, _, now = _code_for(credential_id, access)
    return jsonify({"code": text, "valid_until_ms": now - now % 1000 + VALIDITY_MS})


@bp.get("/my-code")
@doc(
    "A fresh payment code for the signed-in diner's current credential (diner token)",
    response={
        "type": "object",
        "properties": {"code": {"type": "string"}, "valid_until_ms": {"type": "integer"}},
    },
)
@requires("diner")
def my_code():  # noqa: ANN201
    conn = get_db()
    now = get_clock().now_ms()
    current = [c for c in qr_codes.for_holder(conn, g.principal.holder_id or "") if c.active(now)]
    if not current:
        raise DomainError("qr_no_credential", "no current QR credential; issue one first")
    with write_txn(conn):
        text, _ = qr_codes.next_code(conn, _secret(), current[0].id, now)
    return jsonify({"code": text, "valid_until_ms": now - now % 1000 + VALIDITY_MS})


PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>食堂一卡通 付款码</title>
<style nonce="{nonce}">body{{font-family:sans-serif;text-align:center;margin:1em}}
svg{{width:80vw;max-width:360px;height:auto}}
.note{{color:#555;font-size:.9em}}</style></head>
<body><h2>食堂一卡通 · 付款码</h2>
<p>卡号 {card}</p>
<div>{svg}</div>
<p>请向收银终端出示此码。每码仅可使用一次，{seconds} 秒内有效，页面会自动刷新。</p>
<p class="note">离线终端最多可为您先行扣款 {allowance}。请勿截图或转发付款码。</p>
</body></html>"""

GONE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>食堂一卡通</title>
<style nonce="{nonce}">body{{font-family:sans-serif;text-align:center}}</style></head>
<body><h2>{message}</h2>
<p>请联系本单位食堂管理员重新开通扫码支付。</p></body></html>"""


@page.get("/<credential_id>/<access>")
def phone_page(credential_id: str, access: str) -> Response:
    # the page's one inline <style> runs under a fresh nonce; no script at all
    nonce = secrets.token_urlsafe(16)
    csp = {"Content-Security-Policy": page_csp(nonce)}
    try:
        text, cred, _ = _code_for(credential_id, access)
    except DomainError as exc:
        if exc.code not in ("qr_no_credential", "not_found"):
            raise
        body = GONE.format(message=escape(message(exc.code, "zh")), nonce=nonce)
        status = 410 if exc.code == "qr_no_credential" else 404
        return Response(body, status=status, mimetype="text/html", headers=csp)
    body = PAGE.format(
        nonce=nonce,
        refresh=VALIDITY_MS // 2000,
        card=escape(cred.card_id[:2] + "****" + cred.card_id[-2:]),
        svg=svg(text),
        seconds=VALIDITY_MS // 1000,
        allowance=format_fen(cred.offline_allowance_fen),
    )
    return Response(body, mimetype="text/html", headers={"Cache-Control": "no-store", **csp})
