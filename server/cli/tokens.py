"""``canteen-server`` token commands: issue (``create-token``), ``token list``, ``token revoke``.

A token's clear text is printed once, when it is issued, on stdout alone (so that
``TOKEN=$(canteen-server create-token …)`` works); its id and expiry go to stderr. Listings
show ids, never secrets.
"""

from __future__ import annotations

from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.infra.auth import MAX_EXPIRY_DAYS, ROLES, issue_token, list_tokens, revoke_token_id
from server.infra.db import write_txn
from shared.clock import china_datetime


def _now(obj: Any) -> int:  # noqa: ANN401  # the CLI context object
    return int(obj.app.extensions["canteen_clock"].now_ms())


def _when(ms: int | None) -> str:
    return china_datetime(ms).strftime("%Y-%m-%d %H:%M") if ms else "-"


@click.command("create-token")
@click.option("--role", type=click.Choice(list(ROLES)), required=True)
@click.option("--unit", "unit_id", default=None, help="Unit id (clerks).")
@click.option("--operator", default=None, help="Operator name (operators).")
@click.option("--holder", "holder_id", default=None, help="Cardholder id (diners).")
@click.option("--label", default="", help="Whose token this is, for the listing.")
@click.option(
    "--expires-days",
    type=click.IntRange(1, MAX_EXPIRY_DAYS),
    default=None,
    help="Days until it expires (default: 90 for staff, 365 for diners).",
)
@click.pass_obj
def create_token_cmd(
    obj: Any,  # noqa: ANN401
    role: str,
    unit_id: str | None,
    operator: str | None,
    holder_id: str | None,
    label: str,
    expires_days: int | None,
) -> None:
    """Issue an API token for a person; it is printed once."""
    conn = obj.db()
    with write_txn(conn):
        issued = issue_token(
            conn,
            role,
            _now(obj),
            unit_id=unit_id,
            operator=operator,
            holder_id=holder_id,
            label=label,
            expires_days=expires_days,
        )
    click.echo(issued.token)
    click.echo(f"令牌编号 token id {issued.id}，有效至 expires {_when(issued.expires_at_ms)}", err=True)


@click.group()
def token() -> None:
    """API tokens: list them (without secrets) and revoke one."""


def _line(t: dict[str, Any]) -> str:
    scope = t["unit_id"] or t["operator"] or t["holder_id"] or "-"
    state = (
        f"已吊销 revoked {_when(t['revoked_at_ms'])}"
        if t["revoked_at_ms"]
        else f"至 expires {_when(t['expires_at_ms'])}"
    )
    issued = _when(t["created_at_ms"])
    return f"{t['id']}  {t['role']:<8} {scope}  {t['label'] or '-'}  签发 issued {issued}  {state}"


@token.command("list")
@JSON_OPTION
@click.pass_obj
def token_list(obj: Any, as_json: bool) -> None:  # noqa: ANN401
    """Every token: id, role, scope, label, issued, expires, revoked (never the secret)."""
    data = list_tokens(obj.db())
    emit(data, as_json, [_line(t) for t in data] or "(无 none)")


@token.command("revoke")
@click.argument("token_id")
@JSON_OPTION
@click.pass_obj
def token_revoke(obj: Any, token_id: str, as_json: bool) -> None:  # noqa: ANN401
    """Revoke a token by its id; it stops working at once."""
    conn = obj.db()
    with write_txn(conn):
        entry = revoke_token_id(conn, token_id, _now(obj))
    emit(entry, as_json, f"已吊销 revoked: {_line(entry)}")


COMMANDS = [create_token_cmd, token]
