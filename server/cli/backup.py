"""``canteen-server backup``, ``backup-key``, ``backups`` and ``restore``: online backups of the
live database with retention, the separate key backup, and putting a backup back into a
fresh data folder followed by ``check`` (:mod:`server.infra.backup`,
:mod:`server.downstream.backup_marks`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from server.app import create_app
from server.books import ledger
from server.cli.output import JSON_OPTION, emit
from server.closing.check import all_violations
from server.downstream import backup_marks
from server.infra import backup as backups_infra
from server.infra import pg
from server.infra.db import open_db, write_txn
from server.registry import broker_users
from shared.clock import SystemClock, china_datetime
from shared.errors import DomainError


def _when(ms: int | None) -> str:
    return china_datetime(ms).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    help="Then keep only the newest N backup sets in DEST (older ones are deleted).",
)
@click.option(
    "--pages", type=click.IntRange(min=1), default=1024, show_default=True, help="Pages per copy step."
)
@click.option(
    "--pause-ms",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Pause between copy steps, so ingest gets the disk.",
)
@JSON_OPTION
@click.pass_obj
def backup(obj: Any, dest: Path, keep: int | None, pages: int, pause_ms: float, as_json: bool) -> None:
    """Take a consistent online copy of the database into a new set under DEST while the
    server runs (sales keep being ingested): the database, a signed manifest and config.py.

    The server key is NOT in it: back it up once with `backup-key` and keep it apart."""
    app = obj.app
    if pg.is_url(app.config["DATABASE"]):  # the engine's own tools: base backups and WAL
        raise DomainError("backup_sqlite_only", "DATABASE_URL is PostgreSQL")
    key = app.extensions["canteen_server_key"]
    folder, manifest = backups_infra.take_backup(
        app.config["DATABASE"],
        dest,
        key,
        config_file=os.path.join(app.instance_path, "config.py"),
        settings=backups_infra.CopySettings(pages, pause_ms / 1000),
    )
    conn = obj.db()
    removed: list[str] = []
    with write_txn(conn):
        backup_marks.record_backup(conn, manifest, folder)
    if keep is not None:
        removed = backups_infra.prune(dest, keep)
        with write_txn(conn):
            backup_marks.record_removed(conn, removed, SystemClock().now_ms())
    data = {
        "folder": str(folder),
        "manifest": {k: v for k, v in manifest.items() if k != "terminals"},
        "terminals": manifest["terminals"],
        "removed": removed,
    }
    lines = [
        f"备份完成 backup written: {folder}",
        f"  快照时间 snapshot at {manifest['taken_at']}  销售 sales {manifest['sales']:,}  "
        f"大小 {manifest['bytes'] / 1e6:,.1f} MB  复制用时 copy {manifest['copy_ms'] / 1000:.1f} s",
        f"  sha256 {manifest['sha256']}",
        f"  终端 terminals {len(manifest['terminals'])}; 服务器密钥不在备份中 the server key is not in "
        "the backup (canteen-server backup-key)",
        *(f"  已删除旧备份 removed {r}" for r in removed),
    ]
    emit(data, as_json, lines)


@click.command("backup-key")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def backup_key(obj: Any, out: Path) -> None:
    """Copy the server's signing key to OUT (mode 0600, never over an existing file).

    Do this once, after `init`, onto offline media kept apart from the database backups:
    a restore needs it, and terminals trust nothing signed by another key."""
    app = obj.app
    key = backups_infra.write_key_backup(app.config["SERVER_KEY_FILE"], out)
    click.echo(f"服务器密钥已备份 server key written to {out} (0600)")
    click.echo(f"  公钥 public key {key.public_hex}")
    click.echo("  请离线保存，与数据库备份分开 keep it offline, apart from the database backups")


@click.command("backups")
@JSON_OPTION
@click.pass_obj
def backups_list(obj: Any, as_json: bool) -> None:
    """The backups recorded, and how far each terminal may prune its journal."""
    conn = obj.db()
    rows = backup_marks.backups(conn)
    marks = [m.to_body() for m in backup_marks.marks(conn)]
    lines = [
        f"{r['backup_id']} {_when(r['taken_at_ms'])} {r['bytes'] / 1e6:,.1f} MB "
        f"{'保留 kept' if r['kept'] else '已删除 removed'} {r['location']}"
        for r in rows
    ] or ["无备份 no backups yet"]
    lines += [
        f"  终端 {m['terminal_id']}: 可清理至 journal may be pruned up to seq {m['backed_up_seq']}"
        + (f"; 恢复后重发 resend after {m['restored_seq']}" if m["restore_epoch"] else "")
        for m in marks
    ]
    emit({"backups": rows, "marks": marks}, as_json, lines)


@click.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The new data folder (must be empty or missing).",
)
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server key backup (from `backup-key`).",
)
@JSON_OPTION
def restore(src: Path, data_dir: Path, key_path: Path, as_json: bool) -> None:
    """Put the backup set SRC into the fresh data folder DIR, with the server key, then run
    `check` on it (exit 1 on a violation).

    Terminals are then told to send again the sales they had acknowledged after the backup
    (their journals still hold them); start the server on DIR and reload the broker."""
    now = SystemClock().now_ms()
    steps: list[str] = []
    key = backups_infra.read_key(key_path)
    manifest, files = backups_infra.restore_files(src, data_dir, key, steps.append)
    app = create_app(home=str(data_dir.resolve()), require_database=True)
    conn = open_db(app.config["DATABASE"])
    try:
        with write_txn(conn):
            epoch = backup_marks.record_restore(conn, manifest, src, now)
        broker_users.write_broker_files(conn, broker_users.BrokerFiles.from_config(app.config))
        checked, check_lines = _check(conn)
    finally:
        conn.close()
    data = {
        "data_folder": str(data_dir.resolve()),
        "backup_id": manifest["backup_id"],
        "taken_at": manifest["taken_at"],
        "restore_epoch": epoch,
        "terminals": manifest["terminals"],
        "config": str(files.config) if files.config else None,
        "config_set_aside": str(files.config_set_aside) if files.config_set_aside else None,
        **checked,
    }
    lines = [
        *steps,
        f"已恢复到 restored into {data['data_folder']} (restore {epoch})",
        f"  备份时间 backup taken at {manifest['taken_at']}; 此后的数据不在其中 nothing after it is in it",
        *(
            [
                f"  配置文件含数据路径，已另存待核对 config.py names data files: "
                f"set aside as {files.config_set_aside}"
            ]
            if files.config_set_aside
            else []
        ),
        *check_lines,
        "下一步 next: 以该目录启动服务器 start the server on it (CANTEEN_HOME), 重新加载 broker "
        "reload the broker (passwd/ACL rewritten); 终端将自动重发备份后的交易 terminals resend the "
        "sales acknowledged after the backup by themselves",
    ]
    emit(data, as_json, lines)
    sys.exit(0 if data["ok"] else 1)


def _check(conn) -> tuple[dict[str, Any], list[str]]:  # noqa: ANN001
    """`check` on a database just put back: its JSON fields and the lines that say it."""
    violations = all_violations(conn)
    ledger_sum = ledger.ledger_sum(conn)
    fields = {
        "ok": not violations,
        "ledger_sum_fen": ledger_sum,
        "violations": [v.to_json() for v in violations],
    }
    lines = [
        f"账本合计 ledger sum: {ledger_sum} fen",
        *(f"违规 violation [{v.code}]: {v.detail}" for v in violations),
        "检查通过 check OK" if not violations else f"{len(violations)} violation(s)",
    ]
    return fields, lines


@click.command("declare-restored")
@click.option(
    "--reason",
    required=True,
    help="What put this database back, for the record (e.g. 'promoted async standby db2').",
)
@click.confirmation_option(
    prompt="Every terminal will resend the sales this database lacks. Declare it restored?",
    help="Do not ask for confirmation.",
)
@JSON_OPTION
@click.pass_obj
def declare_restored(obj: Any, reason: str, as_json: bool) -> None:
    """Declare the database this server runs on restored by other means than `restore` — a
    promoted asynchronous PostgreSQL standby, a point-in-time recovery — so that terminals
    send again every sale it lacks (they keep them in their journals), then run `check`.

    What it holds of each terminal is read from its own sales; the delta numbering jumps as
    after `restore`. Running servers tell the terminals within seconds (backup marks)."""
    if not reason.strip():
        raise click.BadParameter("说明不能为空 / must not be empty", param_hint="--reason")
    conn = obj.db()
    try:
        with write_txn(conn):
            epoch, held = backup_marks.declare_restore(conn, reason.strip(), SystemClock().now_ms())
        checked, check_lines = _check(conn)
    finally:
        conn.close()
    data = {"restore_epoch": epoch, "held_through": held, **checked}
    lines = [
        f"已登记恢复 declared restored (restore {epoch}): {reason.strip()}",
        *(f"  {tid}: 已有交易至 holds sales through seq {seq}" for tid, seq in sorted(held.items())),
        *check_lines,
        "终端将重发此后的交易 terminals resend the sales after these by themselves",
    ]
    emit(data, as_json, lines)
    sys.exit(0 if data["ok"] else 1)


COMMANDS = [backup, backup_key, backups_list, restore, declare_restored]
