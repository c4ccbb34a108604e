"""``canteen-server limits``: the operation ceilings and the refund second-approval window
(:mod:`server.registry.ceilings`)."""

from __future__ import annotations

from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.infra.db import write_txn
from server.registry import ceilings
from shared.errors import DomainError
from shared.money import format_fen, parse_yuan

_NAMES = {
    "max_topup_fen": "单笔充值上限 top-up ceiling",
    "max_allocation_per_person_fen": "每人每季度拨付上限 allocation ceiling per person",
    "refund_second_approval_days": "账户变更后退款需双人审批的天数 second-approval window (days)",
}


def _line(key: str, value: int) -> str:
    shown = format_fen(value) if key.endswith("_fen") else f"{value} 天 days"
    return f"{_NAMES[key]} ({key}): {shown}"


@click.group()
def limits() -> None:
    """Ceilings on top-ups and allocations, and the refund second-approval window."""


@limits.command("show")
@JSON_OPTION
@click.pass_obj
def limits_show(obj: Any, as_json: bool) -> None:
    """The ceilings in force (defaults where never set)."""
    values = ceilings.all_values(obj.db())
    emit(values, as_json, [_line(k, v) for k, v in values.items()])


@limits.command("set")
@click.argument("key", type=click.Choice(sorted(ceilings.DEFAULTS)))
@click.argument("value")
@JSON_OPTION
@click.pass_obj
def limits_set(obj: Any, key: str, value: str, as_json: bool) -> None:
    """Set one: amounts in yuan (``max_topup_fen 5000`` = ¥5,000), the window in days."""
    if key.endswith("_fen"):
        number = parse_yuan(value)
    else:
        try:
            number = int(value)
        except ValueError as exc:
            raise DomainError("invalid_input", f"{key}: a whole number of days") from exc
    conn = obj.db()
    with write_txn(conn):
        ceilings.set_value(conn, key, number)
    emit({key: number}, as_json, _line(key, number))


COMMANDS = [limits]
