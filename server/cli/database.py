"""``canteen-server migrate-db``: move the city's database to PostgreSQL (or back), checked.

The steps around it (docs/scaling.md): stop the server, create an empty PostgreSQL database,
run ``migrate-db --to postgresql://…``, set ``DATABASE_URL`` in config.py, start the server.
"""

from __future__ import annotations

from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.closing.check import all_violations
from server.infra import dbcopy
from server.infra.db import open_db, shown
from shared.errors import DomainError


@click.command("migrate-db")
@click.option(
    "--to",
    "target",
    required=True,
    help="The empty database to fill: postgresql://user@host:port/name, or a file.",
)
@click.option(
    "--from",
    "source",
    default=None,
    help="The database to copy (default: this data folder's, DATABASE or DATABASE_URL).",
)
@JSON_OPTION
@click.pass_obj
def migrate_db(obj: Any, target: str, source: str | None, as_json: bool) -> None:
    """Copy every row of the city's database into an empty one (SQLite → PostgreSQL, or back),
    then compare them: rows of every table, the ledger's sums, and `check` on both sides.
    Exit 0 only when they match; the source is never changed. Stop the server first."""
    source = source or str(obj.app.config["DATABASE"])
    if source == target:
        raise DomainError("invalid_input", "--from and --to name the same database")
    src, dst = open_db(source), open_db(target)
    try:
        report = dbcopy.copy_database(src, dst)
        source_check = sorted(v.code for v in all_violations(src))
        target_check = sorted(v.code for v in all_violations(dst))
    finally:
        src.close()
        dst.close()
    ok = report.matches and source_check == target_check
    data = {
        **report.to_json(),
        "from": shown(source),
        "to": shown(target),
        "source_check": source_check,
        "target_check": target_check,
        "ok": ok,
    }
    lines = [f"复制 copied {shown(source)} → {shown(target)} (schema {report.schema_version})"]
    lines += [f"  {t}: {n}" for t, n in report.tables.items() if n]
    lines.append(f"账本 ledger (source): {report.source_ledger}")
    lines.append(f"账本 ledger (target): {report.target_ledger}")
    lines.append(f"check: source {source_check or 'OK'}, target {target_check or 'OK'}")
    if ok:
        lines.append("一致 identical. Now set DATABASE_URL in config.py (or CANTEEN_DATABASE_URL) and start.")
    else:
        lines.append("不一致 NOT identical: keep running on the source; see the figures above")
    emit(data, as_json, lines)
    if not ok:
        raise SystemExit(1)


COMMANDS = [migrate_db]
