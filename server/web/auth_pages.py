"""Log-in pages: staff log-in, diner log-in and activation, password change, log-out.

The rules live in :mod:`server.web.accounts` (hashing, lock-out, activation codes) and
:mod:`server.web.sessions` (idle timeout); these views only read the forms, call them inside
a write transaction, and show the result. A refused log-in still commits its failure count
(that is what locks the account after five), then shows the reason beside the field.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, flash, redirect, render_template, request, session, url_for
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.web import accounts, sessions
from server.web.blueprint import web_blueprint
from server.web.forms import Form, add_error, status_of
from server.web.guard import current_account, home_for, page, public_page, safe_next, sign_in, sign_out
from shared.errors import message

bp = web_blueprint("web_auth", __name__)

REQUIRED = "请填写此项"
PASSWORD_RULE = "至少 8 位，须同时包含字母和数字"


class LoginForm(Form):
    username = StringField(
        "用户名", validators=[DataRequired(REQUIRED), Length(max=32, message="用户名过长")]
    )
    password = PasswordField("密码", validators=[DataRequired(REQUIRED), Length(max=128, message="密码过长")])


def _unit_choices() -> list[tuple[str, str]]:
    units = get_db().execute("SELECT id, name FROM units ORDER BY name").fetchall()
    return [("", "（工号唯一时可不选）")] + [(u["id"], u["name"]) for u in units]


class _DinerForm(Form):
    """A diner names himself by staff number, and by unit where the number is not unique."""

    staff_no = StringField("工号", validators=[DataRequired(REQUIRED), Length(max=32, message="工号过长")])
    unit_id = SelectField("单位", validate_choice=False)


class DinerLoginForm(_DinerForm):
    password = PasswordField("密码", validators=[DataRequired(REQUIRED), Length(max=128, message="密码过长")])


class ActivateForm(_DinerForm):
    code = StringField("激活码", validators=[DataRequired(REQUIRED), Length(max=32, message="激活码过长")])
    new_password = PasswordField(
        "设置密码", description=PASSWORD_RULE, validators=[DataRequired(REQUIRED), Length(max=128)]
    )
    confirm = PasswordField(
        "再次输入密码", validators=[DataRequired(REQUIRED), EqualTo("new_password", "两次输入的密码不一致")]
    )


class PasswordForm(Form):
    old_password = PasswordField("当前密码", validators=[DataRequired(REQUIRED), Length(max=128)])
    new_password = PasswordField(
        "新密码", description=PASSWORD_RULE, validators=[DataRequired(REQUIRED), Length(max=128)]
    )
    confirm = PasswordField(
        "再次输入新密码", validators=[DataRequired(REQUIRED), EqualTo("new_password", "两次输入的密码不一致")]
    )


def _signed_in(result: accounts.LoginResult) -> Response:
    assert result.account is not None
    conn = get_db()
    with write_txn(conn):
        sid = sessions.start(conn, result.account.id, get_clock().now_ms())
    sign_in(result.account, sid)
    if result.account.must_change:
        flash("首次登录，请先设置新密码。", "info")
        return redirect(url_for("web_auth.change_password"))  # type: ignore[return-value]
    return redirect(safe_next(request.args.get("next")) or home_for(result.account))  # type: ignore[return-value]


def _attempt(action: Callable[..., accounts.LoginResult], *args: object) -> accounts.LoginResult:
    """Run one account action in its own write transaction, stamped with now and the caller's
    address: every log-in, activation and password change is recorded that way."""
    conn = get_db()
    with write_txn(conn):
        return action(conn, *args, get_clock().now_ms(), request.remote_addr or "")


def _show_refusal(form: Form, result: accounts.LoginResult, default_field: str) -> None:
    assert result.refusal is not None
    text = message(result.refusal) + (
        f"：{result.zh}" if result.zh and result.refusal != "invalid_input" else ""
    )
    add_error(form, result.field or default_field, result.zh if result.refusal == "invalid_input" else text)


@bp.get("/")
@public_page
def index() -> Response:
    account = current_account()
    return redirect(home_for(account) if account else url_for("web_auth.login"))  # type: ignore[return-value]


@bp.route("/login", methods=["GET", "POST"])
@public_page
def login() -> Response | tuple[str, int]:
    form = LoginForm()
    if form.validate_on_submit():
        result = _attempt(accounts.login_staff, form.username.data.strip(), form.password.data)
        if result.account:
            return _signed_in(result)
        _show_refusal(form, result, "password")
    return render_template("web/login.html", form=form), status_of(form)


@bp.route("/diner/login", methods=["GET", "POST"])
@public_page
def diner_login() -> Response | tuple[str, int]:
    form = DinerLoginForm()
    form.unit_id.choices = _unit_choices()
    if form.validate_on_submit():
        result = _attempt(
            accounts.login_diner, form.staff_no.data.strip(), form.unit_id.data or None, form.password.data
        )
        if result.account:
            return _signed_in(result)
        _show_refusal(form, result, "password")
    return render_template("web/diner_login.html", form=form), status_of(form)


@bp.route("/diner/activate", methods=["GET", "POST"])
@public_page
def activate() -> Response | tuple[str, int]:
    form = ActivateForm()
    form.unit_id.choices = _unit_choices()
    if request.method == "GET":
        form.staff_no.data = form.staff_no.data or request.args.get("staff_no", "")[:32]
    if form.validate_on_submit():
        result = _attempt(
            accounts.activate,
            form.staff_no.data.strip(),
            form.unit_id.data or None,
            form.code.data,
            form.new_password.data,
        )
        if result.account:
            flash("账户已开通，欢迎使用。", "success")
            return _signed_in(result)
        _show_refusal(form, result, "code")
    return render_template("web/activate.html", form=form), status_of(form)


@bp.route("/password", methods=["GET", "POST"])
@page("admin", "clerk", "operator", "auditor", "diner")
def change_password() -> Response | tuple[str, int]:
    account = current_account()
    assert account is not None
    form = PasswordForm()
    if form.validate_on_submit():
        conn = get_db()
        with write_txn(conn):
            result = accounts.change_password(
                conn,
                account.id,
                form.old_password.data,
                form.new_password.data,
                get_clock().now_ms(),
                request.remote_addr or "",
            )
            if result.account:
                sessions.end_others(conn, account.id, session.get("sid"))
        if result.account:
            flash("密码已修改。", "success")
            return redirect(home_for(result.account))  # type: ignore[return-value]
        if result.refusal == "account_locked":
            conn = get_db()
            with write_txn(conn):
                sid = sign_out()
                if sid:
                    sessions.end(conn, sid)
            flash(message("account_locked"), "error")
            return redirect(url_for("web_auth.login"))  # type: ignore[return-value]
        _show_refusal(form, result, "new_password")
    return render_template("web/password.html", form=form, forced=account.must_change), status_of(form)


@bp.post("/logout")
@public_page
def logout() -> Response:
    account = current_account()
    conn = get_db()
    sid = sign_out()
    if sid:
        with write_txn(conn):
            sessions.end(conn, sid)
    flash("您已退出登录。", "info")
    login = "web_auth.diner_login" if account and account.role == "diner" else "web_auth.login"
    return redirect(url_for(login))  # type: ignore[return-value]
