"""The diner's pay code (付款码) on their phone: a fresh signed QR code, good for 60 seconds,
that the terminal's scanner reads (:mod:`server.sales.qr_codes`, drawn by
:mod:`server.sales.qr_render` — the same codes as the clerk-issued phone page ``/qr/…``).

* ``/me/pay`` shows a code made now. A small script (``static/paycode.js``, no inline code:
  the page's CSP allows none) counts down and swaps in a new code from ``/me/pay/code.json``
  ten seconds before it runs out; without JavaScript the page reloads itself (``<noscript>``
  refresh) and a 刷新付款码 link makes a new one at any time.
* Without a current QR credential the page offers to open QR payment (开通扫码支付): a new
  credential for the diner's active card, whose public key reaches every terminal in the next
  delta. A lost card with no replacement cannot pay by code.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, flash, jsonify, redirect, render_template, url_for

from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.sales import qr_codes
from server.sales.qr_render import svg
from server.web.blueprint import web_blueprint
from server.web.diner_common import TABS, active_card, masked, me
from server.web.forms import Form
from server.web.guard import page
from shared.errors import DomainError
from shared.paycode import VALIDITY_MS, parse_code

bp = web_blueprint("web_diner_pay", __name__)
REFRESH_BEFORE_S = 10  # the script fetches a new code this long before the shown one runs out
NO_STORE = {"Cache-Control": "no-store"}


class EnableForm(Form):
    """开通扫码支付: no fields, the CSRF token only."""


def _secret() -> bytes:
    return qr_codes.qr_secret(current_app.extensions["canteen_server_key"])


def _current(holder_id: str, now_ms: int) -> qr_codes.Credential | None:
    return next((c for c in qr_codes.for_holder(get_db(), holder_id) if c.active(now_ms)), None)


def _fresh_code(credential_id: str) -> dict[str, Any]:
    """A new code for the credential (it takes the next counter: a write)."""
    conn = get_db()
    now = get_clock().now_ms()
    with write_txn(conn):
        text, cred = qr_codes.next_code(conn, _secret(), credential_id, now)
    valid_until = now - now % 1000 + VALIDITY_MS
    return {
        "svg": svg(text),
        "valid_until_ms": valid_until,
        "seconds": (valid_until - now) // 1000,
        "card": masked(parse_code(text).card_id),
        "allowance_fen": cred.offline_allowance_fen,
    }


@bp.get("/me/pay")
@page("diner")
def pay_code() -> tuple[str, int, dict[str, str]]:
    conn = get_db()
    holder = me(conn)
    card = active_card(conn, holder["id"])
    cred = _current(holder["id"], get_clock().now_ms())
    code = _fresh_code(cred.id) if cred and card else None  # a lost card's codes would be refused
    return (
        render_template(
            "web/diner_pay.html",
            tabs=TABS,
            code=code,
            card=card,
            form=EnableForm(),
            refresh_before=REFRESH_BEFORE_S,
            reload_after=max(VALIDITY_MS // 1000 - REFRESH_BEFORE_S, 5),
        ),
        200,
        NO_STORE,
    )


@bp.get("/me/pay/code.json")
@page("diner")
def code_json() -> Response:
    """A new code for the page's script (the same as reloading the page)."""
    conn = get_db()
    holder = me(conn)
    cred = _current(holder["id"], get_clock().now_ms())
    if cred is None or active_card(conn, holder["id"]) is None:
        raise DomainError("qr_no_credential", "no current QR credential or no active card")
    response = jsonify(_fresh_code(cred.id))
    response.headers.update(NO_STORE)
    return response


@bp.post("/me/pay/enable")
@page("diner")
def enable() -> Response:
    """Open QR payment for the diner's active card (a new credential replaces an old one)."""
    form = EnableForm()
    conn = get_db()
    holder = me(conn)
    card = active_card(conn, holder["id"])
    if form.validate_on_submit():
        if card is None:
            flash("您没有可用的卡片（已挂失或停用），不能开通扫码支付。请联系单位经办人补卡。", "error")
        else:
            with write_txn(conn):
                qr_codes.issue(conn, _secret(), card, get_clock().now_ms())
            flash("扫码支付已开通。", "success")
    return redirect(url_for("web_diner_pay.pay_code"))  # type: ignore[return-value]
