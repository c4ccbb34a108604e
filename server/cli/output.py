"""The edge every ``canteen-server`` command shares: how results are printed and how errors
become exit codes.

* :func:`emit` prints a result: indented JSON with ``--json`` (:data:`JSON_OPTION`), else
  the human text (a string, or lines to join).
* the main group's class, :class:`shared.cli_edge.DomainGroup` (shared with
  ``canteen-terminal``), turns a :class:`~shared.errors.DomainError` into a clear refusal on
  stderr (:func:`shared.errors.refusal_text`: Chinese first, English beside it) and exit
  code 2; :func:`print_import_errors` lists each refused line of an import first. (``check`` exits
  1 on a violated invariant by itself.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from server.infra.csvinput import LineError
from shared.errors import DomainError
from shared.money import parse_yuan

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def emit(data: Any, as_json: bool, text: str | Sequence[str]) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text`` (a string, or lines)."""
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        click.echo(text if isinstance(text, str) else "\n".join(text))


AMOUNT_SETTINGS = {"ignore_unknown_options": True}
"""``context_settings`` of a command with an amount argument: ``-5`` reaches the amount
parser (and is refused as not positive) instead of being taken for an unknown option."""


def yuan(value: str, *, zero_ok: bool = False) -> int:
    """An amount a person typed in yuan (``50``, ``12.50``, ``¥50``, ``50元``) → fen; a
    negative one (or zero, unless ``zero_ok``) is refused (``amount_not_positive``)."""
    fen = parse_yuan(value)
    if fen < 0 or (fen == 0 and not zero_ok):
        raise DomainError(
            "amount_not_positive",
            f"{value!r}" + (": zero is allowed here, a negative amount is not" if zero_ok else ""),
            zh=f"“{value}”" + ("：此处可以为零，但不能为负数" if zero_ok else ""),
        )
    return fen


def print_import_errors(exc: DomainError, as_json: bool) -> None:
    """A refused import (``import_rejected``): every line's problem, as JSON or on stderr."""
    errors = exc.context.get("errors", [])
    if as_json:
        click.echo(
            json.dumps(
                {"ok": False, "code": exc.code, "detail": exc.detail, "errors": errors},
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for e in errors:
            click.echo(
                LineError(e["line"], e["column"], e["code"], e["detail"], e.get("detail_zh", "")).text(),
                err=True,
            )
