"""Terminals (admin): the fleet with what the server knows of each, provisioning a new one
(its configuration shown once), and revoking one (after a confirmation).

* **Fleet**: every terminal with its canteen, online or not (its last heartbeat, by the
  dashboard's rule :func:`server.web.dashboard_data.is_online`), how far its sales are
  uploaded (watermark), unsent sales, clock offset, a second process seen running its identity
  (:func:`server.registry.terminals.duplicates`), and when it was revoked; above it, the
  server's own link to the broker and its presence heartbeat when this process runs the
  service (:mod:`server.downstream.presence`).
* **Provisioning** issues a one-time enrolment code (注册码, :func:`server.registry.enrolment.issue`,
  as ``canteen-server provision-terminal`` and ``POST /api/v1/enrolments`` do): the page shows
  the code once, its expiry and the command to type on the terminal; the secret then travels
  only from the server to the terminal, over HTTPS, and no person sees it. The old way (for a
  laptop or a test) is a choice on the form: register at once and show the one-time
  configuration with its secret, as ``POST /api/v1/terminals`` does. Either page is shown
  once (``Cache-Control: no-store``; kept nowhere else); the form carries a one-time number
  kept in the session, so reloading the page (the browser re-posting the form) issues nothing
  more. Codes still waiting are listed on the fleet page.
* **Revoking** (:func:`server.registry.terminals.revoke`) is final: the broker drops the
  terminal, the server refuses its requests and its sales dated from now on.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

from flask import Response, current_app, flash, redirect, render_template, request, session, url_for
from wtforms import BooleanField, HiddenField, RadioField, SelectField, StringField
from wtforms.validators import DataRequired, Length, ValidationError

from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.registry import broker_users, enrolment, terminals, updates
from server.web.blueprint import web_blueprint
from server.web.dashboard_data import is_online
from server.web.downloads import table_download
from server.web.forms import Form, new_id_rules, refuse_explained
from server.web.guard import page
from server.web.tables import Column, Table, TableQuery, fetch, fetch_all, like
from shared.errors import DomainError
from shared.mqtt import BrokerAddress, without_credentials

bp = web_blueprint("web_terminals", __name__)

NONCE_KEY = "provision_nonce"
FLEET = Table(
    name="fleet",
    columns=(
        Column("terminal_id", "终端", "t.id", link=("web_terminals.terminal", "terminal_id", "terminal_id")),
        Column("canteen_name", "食堂", "canteen_name"),
        Column("status_zh", "状态", "t.state"),
        Column("last_status_ms", "最后心跳", "t.last_status_ms", "time"),
        Column("watermark_ms", "消费已上传至", "t.watermark_ms", "time"),
        Column("pending", "未上传消费", None, "int"),
        Column("offset", "时钟偏差"),
        Column("created_at_ms", "登记时间", "t.created_at_ms", "time"),
    ),
    select_sql=(
        "SELECT t.id AS terminal_id, t.canteen_id AS canteen_id, "
        "coalesce(c.name, t.canteen_id) AS canteen_name, "
        "t.state AS state, t.last_status_ms AS last_status_ms, t.watermark_ms AS watermark_ms, "
        "t.last_status_json AS last_status_json, t.created_at_ms AS created_at_ms "
        "FROM terminals t LEFT JOIN canteens c ON c.id = t.canteen_id"
    ),
    default_sort="terminal_id",
    tie_break="t.id",
    search_sql="(t.id LIKE ? ESCAPE '\\' OR c.name LIKE ? ESCAPE '\\' OR t.canteen_id = ?)",
    search_args=lambda q: [like(q), like(q), q],
    search_label="终端编号或食堂",
)


def describe(conn: sqlite3.Connection, rows: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """Add what people read: the status in Chinese, unsent sales and the clock offset from the
    last heartbeat, a duplicate identity, when it was revoked."""
    duplicated = terminals.duplicates(conn)
    for r in rows:
        status = json.loads(r.pop("last_status_json") or "{}")
        r["pending"] = status.get("pending")
        offset = status.get("clock_offset_ms")
        r["offset"] = None if offset is None else f"{offset / 1000:+.1f} 秒"
        r["revoked_at_ms"] = terminals.revoked_at(conn, r["terminal_id"]) if r["state"] == "revoked" else None
        r["online"] = is_online(r["state"], r["last_status_ms"], now_ms)
        if r["state"] == "revoked":
            text = "已停用"
        elif r["online"]:
            text = "在线"
        elif r["last_status_ms"] is None:
            text = "从未连接"
        else:
            text = "离线"
        if r["terminal_id"] in duplicated:
            text += "（警告：同一终端身份在两处运行）"
        r["status_zh"] = text
        r["duplicate"] = duplicated.get(r["terminal_id"])
    return rows


def server_presence() -> dict[str, Any] | None:
    """This process's own link to the broker and presence heartbeat, when it runs the service
    (``canteen-server run``); None when the pages are served without it (tests, a second web
    process)."""
    service = current_app.extensions.get("canteen_service")
    if service is None or service.presence is None or service.link is None:
        return None
    return {"connected": bool(service.link.connected), "heartbeat_s": service.presence.heartbeat_s}


@bp.get("/terminals")
@page("admin")
def fleet() -> str | Response:
    conn = get_db()
    query = TableQuery.from_args(FLEET, request.args)
    now = get_clock().now_ms()
    if request.args.get("format"):
        return table_download(FLEET, describe(conn, fetch_all(conn, FLEET, query), now), "终端")
    table = fetch(conn, FLEET, query)
    describe(conn, table.rows, now)
    counts = conn.execute(
        "SELECT count(*) AS total, "
        "coalesce(sum(CASE WHEN state = 'revoked' THEN 1 ELSE 0 END), 0) AS revoked "
        "FROM terminals"
    ).fetchone()
    return render_template(
        "registry/terminals.html",
        table=table,
        counts=counts,
        presence=server_presence(),
        waiting=enrolment.pending(conn, now),
    )


# --- one terminal, and revoking it ---------------------------------------------------------


class RevokeForm(Form):
    confirm = BooleanField(
        "我确认停用该终端（不能恢复；如需继续使用，须重新登记为新终端）",
        validators=[DataRequired("请勾选确认")],
    )


def _terminal(conn: sqlite3.Connection, terminal_id: str) -> dict[str, Any]:
    row = conn.execute(FLEET.select_sql + " WHERE t.id = ?", (terminal_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"terminal {terminal_id}")
    return describe(conn, [dict(row)], get_clock().now_ms())[0]


@bp.route("/terminals/<terminal_id>", methods=["GET", "POST"])
@page("admin")
def terminal(terminal_id: str) -> Response | tuple[str, int]:
    """The terminal's facts and, unless it is revoked already, the confirmation to revoke it."""
    conn = get_db()
    t = _terminal(conn, terminal_id)
    form = RevokeForm()
    if t["state"] != "revoked" and request.method == "POST" and form.validate_on_submit():
        with write_txn(conn):  # as revoke-terminal: a waiting enrolment code is cancelled too
            enrolment.retire(conn, terminal_id, get_clock().now_ms())
        broker_users.apply(conn, current_app.config)  # files rewritten, broker reloaded
        flash(
            f"终端 {terminal_id} 已停用：服务器不再接受它此刻之后的消费和请求。"
            f"消息服务器重新读取用户文件后即断开它（{broker_users.RELOAD_HINT}）。",
            "success",
        )
        return redirect(url_for("web_terminals.fleet"))  # type: ignore[return-value]
    html = render_template("registry/terminal.html", t=t, form=form)
    return html, 400 if form.errors else 200


# --- provisioning ---------------------------------------------------------------------------


DEFAULT_TERMINAL_BROKER = "mqtt://127.0.0.1:1883"  # as the CLI's --broker default


def _broker_urls(form: Form, field: StringField) -> None:
    try:
        nodes = BrokerAddress.parse_list(field.data or "")
    except ValueError as exc:
        raise ValidationError(f"消息服务器地址无效：{exc}") from exc
    if any(n.username is not None or n.password is not None for n in nodes):
        raise ValidationError("地址中不要写用户名和密码：终端用自己的编号和密钥登录")


class ProvisionForm(Form):
    canteen_id = SelectField("食堂", validate_choice=False, validators=[DataRequired("请选择食堂")])
    terminal_id = StringField(
        "终端编号",
        description="可不填，自动编为 T0001 这样的编号；只能用字母、数字、- 和 _",
        validators=new_id_rules("编号不超过 32 个字符"),
    )
    method = RadioField(
        "登记方式",
        choices=[
            ("code", "发放注册码（推荐）：终端凭一次性注册码通过 HTTPS 自行领取配置，密钥不经人手"),
            ("secret", "立即登记并显示配置（含终端密钥，仅用于笔记本或测试）"),
        ],
        default="code",
        validators=[DataRequired("请选择登记方式")],
    )
    broker_url = StringField(
        "终端连接的消息服务器",
        description="如 mqtts://mqtt.example.gov.cn:8883；集群可写多个地址，用逗号分隔",
        validators=[DataRequired("请填写消息服务器地址"), Length(max=500, message="地址过长"), _broker_urls],
    )
    nonce = HiddenField()


def _canteen_choices(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT id, name FROM canteens ORDER BY name").fetchall()
    return [("", "请选择")] + [(r["id"], f"{r['name']}（{r['id']}）") for r in rows]


def provision_output(conn: sqlite3.Connection, canteen_id: str, terminal_id: str | None) -> dict[str, Any]:
    """Provision as ``POST /api/v1/terminals`` does (inside the caller's write transaction);
    returns what the API returns, in the same form: the terminal's one-time configuration."""
    key = current_app.extensions["canteen_server_key"]
    creds = terminals.provision(conn, canteen_id, get_clock().now_ms(), key.public_hex, terminal_id)
    release = updates.release_public_key(current_app.config["RELEASE_PUBLIC_KEY_FILE"])
    return {**creds.to_json(), **({"release_public_key": release} if release else {})}


def _new_page(conn: sqlite3.Connection, form: ProvisionForm) -> tuple[str, int]:
    session[NONCE_KEY] = form.nonce.data = secrets.token_hex(16)
    if not form.broker_url.data:
        form.broker_url.data = without_credentials(
            current_app.config.get("BROKER_URL") or DEFAULT_TERMINAL_BROKER
        )
    return render_template("registry/terminal_new.html", form=form), 400 if form.errors else 200


def _once(html: str) -> Response:
    return Response(html, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@bp.route("/terminals/new", methods=["GET", "POST"])
@page("admin")
def provision() -> Response | tuple[str, int]:
    conn = get_db()
    form = ProvisionForm()
    form.canteen_id.choices = _canteen_choices(conn)
    if request.method == "POST" and form.validate_on_submit():
        expected = session.pop(NONCE_KEY, None)
        if not expected or not secrets.compare_digest(str(expected), form.nonce.data or ""):
            form.form_errors.append("此表单已提交过（或已过期），没有登记新终端。请在下面重新填写。")
            return _new_page(conn, form)
        wanted = (form.terminal_id.data or "").strip() or None
        broker_url = (form.broker_url.data or "").strip()
        try:
            with write_txn(conn):
                if form.method.data == "secret":
                    output = provision_output(conn, form.canteen_id.data, wanted)
                else:
                    issued = enrolment.issue(
                        conn,
                        form.canteen_id.data,
                        get_clock().now_ms(),
                        broker_url=broker_url,
                        terminal_id=wanted,
                    )
        except DomainError as exc:
            field = {"unknown_canteen": "canteen_id", "already_exists": "terminal_id"}.get(
                exc.code, "terminal_id"
            )
            refuse_explained(form, exc, field)
            return _new_page(conn, form)
        if form.method.data != "secret":  # the broker learns the terminal when it enrols
            return _once(
                render_template(
                    "registry/terminal_code.html",
                    issued=issued,
                    public_url=current_app.config.get("PUBLIC_URL") or "",
                )
            )
        # the broker learns the new user: files rewritten, broker reloaded (MQTT_RELOAD_COMMAND or SIGHUP)
        broker_users.apply(conn, current_app.config)
        output["broker_url"] = broker_url
        html = render_template(
            "registry/terminal_config.html",
            output=output,
            text=json.dumps(output, ensure_ascii=False, indent=2),
            reload_hint=broker_users.RELOAD_HINT,
            public_url=current_app.config.get("PUBLIC_URL") or "",
        )
        return _once(html)
    return _new_page(conn, form)
