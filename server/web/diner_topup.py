"""Self top-up from the diner's phone through the digital RMB (数字人民币) gateway
(:mod:`server.sales.ecny_topups`: an order of ours, paid in the diner's wallet, credited to the
self purse once the gateway says it was paid for exactly its amount).

* ``/me/topup`` — choose an amount (quick amounts or typed yuan); the order opens at the
  gateway and the page of the order shows the merchant QR code the wallet app pays, with the
  recent orders and their state.
* ``/me/topup/<order>`` — the order: asks the gateway while it is open (so it needs no
  callback to come through), and says when the money is on the self purse.
* ``/me/topup/<order>/wallet`` — **simulated only**: with the simulated gateway
  (``ECNY_GATEWAY = "simulated"``) this page stands in for the diner's wallet app, which
  would confirm the payment in a real deployment; with any other gateway it does not exist.
"""

from __future__ import annotations

import sqlite3

from flask import Response, redirect, render_template, url_for
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from server.books import ledger
from server.infra.db_flask import get_clock, get_db
from server.infra.ecny_flask import gateway
from server.registry import ceilings
from server.sales import ecny_topups
from server.sales.qr_render import svg
from server.web.blueprint import web_blueprint
from server.web.diner_common import TABS, active_card, me
from server.web.forms import Form, add_error, refuse, status_of
from server.web.guard import page
from shared.ecny_gateway import EcnyGateway, SimulatedGateway
from shared.errors import DomainError
from shared.money import parse_yuan

bp = web_blueprint("web_diner_topup", __name__)

QUICK_YUAN = (50, 100, 200, 500)
# the simulated wallet every diner has in the demo (the simulated gateway's, in memory)
SIM_WALLET_FEN = 1_000_000
STATUS_ZH = {
    "created": "待支付",
    "credited": "已到账",
    "held": "已支付，待人工处理",
    "failed": "支付失败",
    "closed": "已关闭",
}


class TopupForm(Form):
    amount = StringField(
        "充值金额（元）",
        description="充入自费账户，可用于就餐和购物，不过期、不可提现",
        validators=[DataRequired("请填写充值金额"), Length(max=12, message="金额过长")],
        render_kw={"inputmode": "decimal", "autocomplete": "off"},
    )


class PayForm(Form):
    """The simulated wallet's 确认支付: the CSRF token only."""


def _gateway_or_none() -> EcnyGateway | None:
    try:
        return gateway()
    except DomainError as exc:
        if exc.code != "ecny_not_configured":
            raise
        return None


def _own_order(conn: sqlite3.Connection, holder_id: str, order_no: str) -> sqlite3.Row:
    row = ecny_topups.get(conn, order_no)
    if row["holder_id"] != holder_id:  # another diner's order: as if it did not exist
        raise DomainError("not_found", f"top-up order {order_no}")
    return row


def _page(form: TopupForm, status: int, gw: EcnyGateway | None) -> tuple[str, int]:
    conn = get_db()
    holder = me(conn)
    return render_template(
        "web/diner_topup.html",
        tabs=TABS,
        form=form,
        gateway=gw,
        quick=QUICK_YUAN,
        orders=ecny_topups.of_holder(conn, holder["id"]),
        status_zh=STATUS_ZH,
        ceiling_fen=ceilings.get(conn, "max_topup_fen"),
        card=active_card(conn, holder["id"]),
    ), status


@bp.route("/me/topup", methods=["GET", "POST"])
@page("diner")
def topup() -> Response | tuple[str, int]:
    conn = get_db()
    holder = me(conn)
    gw = _gateway_or_none()
    form = TopupForm()
    card = active_card(conn, holder["id"])
    if gw is not None and form.validate_on_submit():
        if card is None:
            add_error(form, None, "您没有可用的卡片（已挂失或停用），请补卡后再充值。")
            return _page(form, 400, gw)
        try:
            amount = parse_yuan(form.amount.data.strip())
            order = ecny_topups.start(conn, gw, holder["id"], card, amount, get_clock().now_ms())
        except DomainError as exc:
            refuse(form, exc, "amount")
        else:
            return redirect(url_for("web_diner_topup.order", order_no=order["order_no"]))  # type: ignore[return-value]
    return _page(form, status_of(form), gw)


@bp.get("/me/topup/<order_no>")
@page("diner")
def order(order_no: str) -> str:
    conn = get_db()
    holder = me(conn)
    row = _own_order(conn, holder["id"], order_no)
    gw = _gateway_or_none()
    unreachable = False
    if gw is not None and row["status"] == ecny_topups.OPEN and row["qr_text"]:
        try:
            row = ecny_topups.refresh(conn, gw, order_no, get_clock().now_ms())
        except DomainError as exc:
            if exc.code != "ecny_unavailable":
                raise
            unreachable = True
    return render_template(
        "web/diner_topup_order.html",
        tabs=TABS,
        o=row,
        status_zh=STATUS_ZH,
        qr=svg(row["qr_text"]) if row["status"] == ecny_topups.OPEN and row["qr_text"] else None,
        simulated=isinstance(gw, SimulatedGateway),
        unreachable=unreachable,
        self_fen=_self_fen(conn, holder["id"]),
    )


def _self_fen(conn: sqlite3.Connection, holder_id: str) -> int:
    return ledger.balance(conn, ledger.self_purse(holder_id))


@bp.route("/me/topup/<order_no>/wallet", methods=["GET", "POST"])
@page("diner")
def wallet(order_no: str) -> Response | tuple[str, int]:
    """The simulated wallet app (only with the simulated gateway)."""
    conn = get_db()
    holder = me(conn)
    row = _own_order(conn, holder["id"], order_no)
    gw = _gateway_or_none()
    if not isinstance(gw, SimulatedGateway):
        raise DomainError("not_found", "no simulated wallet: the gateway is not the simulated one")
    wallet_id = f"sim-{holder['id']}"
    if wallet_id not in gw.wallets:
        gw.add_wallet(wallet_id, SIM_WALLET_FEN)
    form = PayForm()
    if form.validate_on_submit() and row["status"] == ecny_topups.OPEN:
        try:
            gw.wallet_pays_qr(row["qr_text"] or "", wallet_id)
        except DomainError as exc:
            refuse(form, exc)
        else:
            return redirect(url_for("web_diner_topup.order", order_no=order_no))  # type: ignore[return-value]
    return render_template(
        "web/diner_wallet.html", o=row, balance_fen=gw.wallets[wallet_id].balance_fen, form=form
    ), status_of(form)
