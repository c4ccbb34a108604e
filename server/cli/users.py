"""``canteen-server`` commands for the web console's accounts (issue 14).

* ``user-add NAME --role R`` creates a staff account (admin, clerk of a unit, operator of a
  company, auditor) with a first password, printed once, that must be changed at the first
  log-in; ``user-list`` lists them; ``user-reset-password NAME`` gives a new first password
  (and lifts a lock-out).
* ``diner-activation REF`` prints a one-time activation code for a cardholder (by holder id,
  card number or 工号), with which they set their own password at ``/diner/activate``.
"""

from __future__ import annotations

import secrets
import string
import sys
from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.cli.registry import now_ms
from server.infra.db import write_txn
from server.registry.people import resolve_holder
from server.web import accounts
from server.web.fmt import role_zh
from shared.clock import china_datetime


def first_password() -> str:
    """A random first password that passes the rule: 12 letters and digits, both present."""
    alphabet = string.ascii_letters + string.digits
    while True:
        pw = "".join(secrets.choice(alphabet) for _ in range(12))
        if accounts.password_problem(pw, "") is None:
            return pw


def _when(ms: int | None) -> str:
    return china_datetime(ms).strftime("%Y-%m-%d %H:%M") if ms else "-"


def _new_first_password(from_stdin: bool) -> tuple[str, bool]:
    """A first password: the line on stdin, or a random one (then ``True``: it must be shown,
    once)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return first_password(), True


@click.command("user-add")
@click.argument("username")
@click.option("--role", type=click.Choice(list(accounts.STAFF_ROLES)), required=True)
@click.option("--unit", "unit_id", default=None, help="Unit id (a clerk's unit).")
@click.option("--operator", default=None, help="Operator (company) name (an operator's).")
@click.option("--name", "display_name", default="", help="The person's name, shown on the pages.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the first password from stdin (default: a random one, printed).",
)
@JSON_OPTION
@click.pass_obj
def user_add(
    obj: Any,  # noqa: ANN401
    username: str,
    role: str,
    unit_id: str | None,
    operator: str | None,
    display_name: str,
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Create a web console account for a staff member; they change the first password at
    their first log-in."""
    password, generated = _new_first_password(password_stdin)
    conn = obj.db()
    with write_txn(conn):
        account = accounts.add_staff(
            conn,
            username,
            role,
            password,
            now_ms(),
            unit_id=unit_id,
            operator=operator,
            display_name=display_name,
        )
    data = {"username": account.login, "role": role, "unit_id": account.unit_id, "operator": account.operator}
    if generated:
        data["first_password"] = password
    lines = [f"用户 user {account.login}（{role_zh(role)} {role}）已创建 created"]
    if generated:
        lines.append(f"初始密码 first password (shown once; changed at the first log-in): {password}")
    emit(data, as_json, lines)


@click.command("user-list")
@JSON_OPTION
@click.pass_obj
def user_list(obj: Any, as_json: bool) -> None:  # noqa: ANN401
    """Every staff account of the web console (no passwords)."""
    rows = accounts.list_staff(obj.db())
    lines = [
        f"{r['login']:<16} {r['role']:<8} {r['unit_id'] or r['operator'] or '-'}  {r['display_name'] or '-'}"
        + ("  须改密码 must change password" if r["must_change"] else "")
        + (f"  锁定至 locked until {_when(r['locked_until_ms'])}" if r["locked_until_ms"] else "")
        for r in rows
    ]
    emit({"users": rows}, as_json, lines or ["无账户 no accounts"])


@click.command("user-reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new first password from stdin.")
@click.pass_obj
def user_reset_password(obj: Any, username: str, password_stdin: bool) -> None:  # noqa: ANN401
    """Give a staff account a new first password (to be changed at the next log-in) and lift
    its lock-out."""
    password, generated = _new_first_password(password_stdin)
    conn = obj.db()
    with write_txn(conn):
        accounts.reset_staff_password(conn, username, password, now_ms())
    click.echo(f"用户 user {username}：密码已重置 password reset")
    if generated:
        click.echo(f"初始密码 first password (shown once): {password}")


@click.command("diner-activation")
@click.argument("ref")
@click.option("--unit", "unit_id", default=None, help="The unit, when a 工号 is used in several.")
@JSON_OPTION
@click.pass_obj
def diner_activation(obj: Any, ref: str, unit_id: str | None, as_json: bool) -> None:  # noqa: ANN401
    """Print a one-time activation code for a cardholder's web log-in (replaces an earlier one)."""
    conn = obj.db()
    holder = resolve_holder(conn, ref, unit_id)
    with write_txn(conn):
        issued = accounts.issue_activation(conn, holder["id"], now_ms(), "canteen-server")
    base = (obj.app.config.get("PUBLIC_URL") or "").rstrip("/")
    url = f"{base}/diner/activate" if base else "/diner/activate"
    data = {
        "holder_id": issued.holder_id,
        "name": issued.name,
        "staff_no": issued.staff_no,
        "unit": issued.unit_name,
        "code": issued.code,
        "expires_at_ms": issued.expires_at_ms,
        "url": url,
    }
    lines = [
        f"{issued.name}（{issued.unit_name}，工号 {issued.staff_no}）",
        f"激活码 activation code: {issued.code[:5]}-{issued.code[5:]}",
        f"有效至 valid until: {_when(issued.expires_at_ms)}",
        f"开通地址 open: {url}",
    ]
    emit(data, as_json, lines)


COMMANDS = [user_add, user_list, user_reset_password, diner_activation]
