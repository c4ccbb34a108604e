"""The diner's card and payment PIN.

* **Report the card lost (挂失)**: :func:`server.registry.cards.report_lost` — the function
  the API (``POST /api/v1/cards/<id>/lost``) and the CLI use: the card is blocked in that
  commit and a ``card`` delta goes to every terminal, so the next tap of it is declined (an
  offline terminal as soon as it syncs). Finding it again or a replacement is the clerk's.
* **Set or change the payment PIN (支付密码)** for sales above the no-PIN limit:
  :func:`server.registry.pins.set_own_pin`, the API's rule (the old PIN when one is set; a
  wrong one counts, the fifth locks it until midnight).
* **Reset a forgotten PIN** by proving who one is again with the web log-in password
  (:func:`server.web.accounts.confirm_password`: a wrong password counts as a failed log-in,
  the fifth locks the account); the new PIN replaces the old one and lifts its lock.
"""

from __future__ import annotations

from flask import Response, flash, redirect, render_template, request, url_for
from wtforms import BooleanField, PasswordField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, InputRequired

from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import require_card_access
from server.registry import cards, pins
from server.web import accounts, sessions
from server.web.blueprint import web_blueprint
from server.web.diner_common import TABS, cards_of, me
from server.web.forms import Form, add_error, refuse, status_of
from server.web.guard import current_account, page, sign_out
from shared.errors import DomainError, message

bp = web_blueprint("web_diner_card", __name__)

PIN_RULE = "6 位数字，不能全部相同或连续（如 111111、123456）"
REQUIRED = "请填写此项"


def pin_field(label: str, description: str = "", *more: object) -> PasswordField:
    return PasswordField(
        label,
        description=description,
        validators=[DataRequired(REQUIRED), *more],
        render_kw={"inputmode": "numeric", "autocomplete": "off", "maxlength": 6},
    )


SAME_PIN = EqualTo("pin", "两次输入的支付密码不一致")


class LostForm(Form):
    card_id = SelectField("要挂失的卡", validate_choice=True)
    confirm = BooleanField(
        "我确认挂失这张卡：挂失后立即停用，任何终端都不再接受这张卡",
        validators=[InputRequired("请勾选确认")],
    )


class PinForm(Form):
    old_pin = pin_field("当前支付密码")
    pin = pin_field("新支付密码", PIN_RULE)
    confirm = pin_field("再次输入新支付密码", "", SAME_PIN)


class PinResetForm(Form):
    password = PasswordField(
        "网页登录密码", validators=[DataRequired(REQUIRED)], render_kw={"autocomplete": "current-password"}
    )
    pin = pin_field("新支付密码", PIN_RULE)
    confirm = pin_field("再次输入新支付密码", "", SAME_PIN)


def _lost_form(holder_id: str) -> LostForm:
    form = LostForm()
    active = [c["card_id"] for c in cards_of(get_db(), holder_id) if c["status"] == "active"]
    form.card_id.choices = [SelectChoice(c, c) for c in active]
    return form


@bp.get("/me/card")
@page("diner")
def card() -> str:
    conn = get_db()
    holder = me(conn)
    return render_template(
        "web/diner_card.html",
        tabs=TABS,
        cards=cards_of(conn, holder["id"]),
        lost_form=_lost_form(holder["id"]),
        has_pin=pins.has_pin(conn, holder["id"]),
    )


@bp.post("/me/card/lost")
@page("diner")
def report_lost() -> Response | tuple[str, int]:
    conn = get_db()
    holder = me(conn)
    form = _lost_form(holder["id"])
    if form.validate_on_submit():
        require_card_access(conn, form.card_id.data)  # their own card: the API's scope check
        try:
            with write_txn(conn):
                cards.report_lost(conn, form.card_id.data, get_clock().now_ms())
        except DomainError as exc:
            refuse(form, exc, "card_id")
        else:
            flash(f"卡片 {form.card_id.data} 已挂失并立即停用。如需补卡，请联系单位经办人。", "success")
            return redirect(url_for("web_diner_card.card"))  # type: ignore[return-value]
    page_ = render_template(
        "web/diner_card.html",
        tabs=TABS,
        cards=cards_of(conn, holder["id"]),
        lost_form=form,
        has_pin=pins.has_pin(conn, holder["id"]),
    )
    return page_, status_of(form)


@bp.route("/me/pin", methods=["GET", "POST"])
@page("diner")
def set_pin() -> Response | tuple[str, int]:
    conn = get_db()
    holder = me(conn)
    has_pin = pins.has_pin(conn, holder["id"])
    form = PinForm()
    if not has_pin:
        del form.old_pin  # a first PIN needs no old one
    if form.validate_on_submit():
        wrong: DomainError | None = None
        old = form.old_pin.data if has_pin else None
        now = get_clock().now_ms()
        try:
            with write_txn(conn):
                wrong = pins.set_own_pin(conn, holder["id"], form.pin.data, old, now, "web:diner")
        except DomainError as exc:  # the new PIN's format: nothing was written
            refuse(form, exc, "pin")
        else:
            if wrong is None:
                flash("支付密码已设置。" if not has_pin else "支付密码已修改。", "success")
                return redirect(url_for("web_diner_card.card"))  # type: ignore[return-value]
            refuse(form, wrong, "old_pin")  # the failed try was committed
    return render_template("web/diner_pin.html", tabs=TABS, form=form, has_pin=has_pin), status_of(form)


@bp.route("/me/pin/reset", methods=["GET", "POST"])
@page("diner")
def reset_pin() -> Response | tuple[str, int]:
    conn = get_db()
    holder = me(conn)
    account = current_account()
    assert account is not None
    form = PinResetForm()
    if form.validate_on_submit():
        try:
            pins.check_pin_format(form.pin.data)
        except DomainError as exc:
            refuse(form, exc, "pin")
        else:
            now = get_clock().now_ms()
            with write_txn(conn):
                checked = accounts.confirm_password(
                    conn, account.id, form.password.data, now, request.remote_addr or ""
                )
                if checked.account is not None:
                    pins.set_pin(conn, holder["id"], form.pin.data, now, "web:diner reset")
            if checked.account is not None:
                flash("支付密码已重置。", "success")
                return redirect(url_for("web_diner_card.card"))  # type: ignore[return-value]
            if checked.refusal == "account_locked":  # as a wrong password at log-in: signed out
                sid = sign_out()
                if sid:
                    with write_txn(conn):
                        sessions.end(conn, sid)
                flash(message("account_locked"), "error")
                return redirect(url_for("web_auth.diner_login"))  # type: ignore[return-value]
            add_error(form, "password", "网页登录密码错误")
    return render_template("web/diner_pin_reset.html", tabs=TABS, form=form), status_of(form)
