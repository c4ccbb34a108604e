"""``canteen-server``: run the server, and the clerks' batch jobs.

Domain errors become one clear line on stderr and exit code 2; ``check`` exits 1 when an
invariant is violated. Every command has ``--help``; reporting commands take ``--json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click

from server.app import create_app, default_home, write_config_template
from server.books import ledger
from server.cli import database, ecny, faces, limits, money, people, qr, registry, tokens
from server.cli.output import JSON_OPTION, emit
from server.closing.check import all_violations, quarantine_summary
from server.infra import public_url as public_url_config
from server.infra.auth import create_token
from server.infra.db import open_db, shown, write_txn
from server.infra.keys import load_or_create_secret
from server.registry import broker_users
from server.registry.terminals import fleet, provision, revoke
from server.service import ServerService
from shared.broker import EmbeddedBroker, render_mosquitto_conf
from shared.cli_edge import DomainGroup
from shared.clock import SystemClock, china_datetime
from shared.errors import DomainError
from shared.money import format_fen
from shared.mqtt import redacted_url
from shared.private_files import write_private


class Ctx:
    """The data folder a command works on, its app and database, opened on first use.

    The first use says which folder it is (one line on stderr), and a folder without a
    database is refused (``no_database``) — only ``init`` creates one."""

    def __init__(self, home: str | None) -> None:
        self._home = home
        self.home = os.path.abspath(home) if home else default_home()
        self.creating = False  # init: may create the database
        self._app = None
        self._announced = False

    def announce(self) -> None:
        if not self._announced:
            self._announced = True
            click.echo(f"数据目录 / data folder: {self.home}", err=True)

    @property
    def app(self):  # noqa: ANN201
        if self._app is None:
            self.announce()
            self._app = create_app(home=self.home, require_database=not self.creating)
        return self._app

    def db(self):  # noqa: ANN201
        return open_db(self.app.config["DATABASE"])


@click.group(cls=DomainGroup)
@click.option(
    "--home",
    envvar="CANTEEN_HOME",
    help="Data folder (数据目录): database, server key, config.py. Default: $CANTEEN_HOME, else ./var.",
)
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """Canteen one-card central server (食堂一卡通 中心服务器).

    Every command works on one data folder (--home or CANTEEN_HOME) and says which on
    stderr; only `init` creates its database."""
    ctx.obj = Ctx(home)


@main.command()
@click.option(
    "--public-url",
    default=None,
    help="The server as phones and browsers reach it (https://…): saved as PUBLIC_URL in config.py.",
)
@JSON_OPTION
@click.pass_obj
def init(obj: Ctx, public_url: str | None, as_json: bool) -> None:
    """Create (or migrate) the database, the server key and a commented config.py; print the
    first admin token."""
    obj.creating = True
    # the public URL is checked before anything is created
    url = public_url_config.check(public_url) if public_url is not None else None
    conn = obj.db()
    with write_txn(conn):
        has_admin = conn.execute("SELECT 1 FROM tokens WHERE role = 'admin'").fetchone()
        token = (
            None if has_admin else create_token(conn, "admin", SystemClock().now_ms(), label="first admin")
        )
    # the broker's users and ACL (and the server's own broker password, never printed), and
    # the simulated e-CNY gateway's per-installation key, should anyone choose that gateway
    broker_users.write_broker_files(conn, _broker_files(obj))
    load_or_create_secret(obj.app.config["ECNY_SIM_KEY_FILE"])
    config_path = write_config_template(obj.home)
    if url is not None:
        obj.app.config["PUBLIC_URL"] = public_url_config.save(
            os.path.join(obj.app.instance_path, "config.py"), url
        )
    data = {
        "home": obj.home,
        "database": shown(obj.app.config["DATABASE"]),
        "config": os.path.join(obj.home, "server", "config.py"),
        "config_created": config_path is not None,
        "public_url": obj.app.config.get("PUBLIC_URL") or None,
        "admin_token": token,
    }
    text = [
        f"数据库 database: {data['database']}",
        f"配置文件 config: {data['config']}"
        + ("（新建 created, all settings commented out）" if config_path else ""),
        *([f"对外地址 public URL: {data['public_url']}"] if data["public_url"] else []),
        f"管理员令牌 admin token (shown once): {token}"
        if token
        else "管理员令牌已签发 admin token already issued",
    ]
    emit(data, as_json, text)


@main.command()
@click.option(
    "--broker",
    "broker_url",
    envvar="CANTEEN_BROKER_URL",
    default="",
    help="mqtt://host:port; empty: embedded broker.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.pass_obj
def run(obj: Ctx, broker_url: str, host: str, port: int) -> None:
    """Run the HTTP API, the MQTT ingest worker and the delta publisher until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    broker = None
    if not broker_url:
        broker = EmbeddedBroker(1883).start()
        broker_url = broker.url
        click.echo(f"embedded MQTT broker on {broker_url}")
    service = ServerService(broker_url, app=obj.app, http_host=host, http_port=port).start()
    click.echo(f"server: {service.base_url}  broker: {redacted_url(broker_url)}")  # no password
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    service.stop()
    if broker is not None:
        broker.stop()


@main.command("provision-terminal")
@click.argument("canteen_id")
@click.option("--id", "terminal_id", default=None, help="Terminal id (default: next T####).")
@click.option("--broker", "broker_url", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--server-url", default="http://127.0.0.1:8080", show_default=True)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the config to this file, mode 0600 (recommended: it holds the terminal's secret).",
)
@click.pass_obj
def provision_terminal(
    obj: Ctx,
    canteen_id: str,
    terminal_id: str | None,
    broker_url: str,
    server_url: str,
    out_path: Path | None,
) -> None:
    """Register a terminal for a canteen and write its config (JSON, with its secret).

    With ``--out FILE`` the config goes to FILE, readable by its owner only; without it, to
    stdout (for a pipe — a shell redirect would create a file others may read)."""
    if out_path is not None:
        # before provisioning: a folder that does not exist yet (/etc/canteen on a fresh Pi)
        # must not leave a terminal registered whose secret was never written anywhere
        out_path.parent.mkdir(parents=True, exist_ok=True)
    conn = obj.db()
    key = obj.app.extensions["canteen_server_key"]
    with write_txn(conn):
        creds = provision(conn, canteen_id, SystemClock().now_ms(), key.public_hex, terminal_id)
    _sync_broker(obj, conn)
    config = json.dumps({**creds.to_json(), "broker_url": broker_url, "server_url": server_url}, indent=2)
    if out_path is None:
        click.echo(config)
        click.echo(
            "注意：配置含终端密钥，请勿用 > 重定向保存，改用 --out FILE（权限 0600）。"
            " note: the config holds the terminal's secret; use --out FILE (mode 0600).",
            err=True,
        )
        return
    write_private(out_path, config + "\n")
    click.echo(f"终端 terminal {creds.terminal_id}: 配置已写入 config written to {out_path} (0600)")


@main.command("revoke-terminal")
@click.argument("terminal_id")
@click.pass_obj
def revoke_terminal(obj: Ctx, terminal_id: str) -> None:
    """Take a terminal out of service: remove its broker user and ACL lines; from now on the
    server refuses its requests and its sales dated from now on."""
    conn = obj.db()
    with write_txn(conn):
        revoke(conn, terminal_id, SystemClock().now_ms())
    _sync_broker(obj, conn)
    click.echo(f"终端已停用 terminal revoked: {terminal_id}")


def _broker_files(obj: Ctx) -> broker_users.BrokerFiles:
    return broker_users.BrokerFiles.from_config(obj.app.config)


def _sync_broker(obj: Ctx, conn) -> None:  # noqa: ANN001
    """Rewrite the broker's password and ACL files; say (on stderr) how to reload them."""
    files = _broker_files(obj)
    broker_users.write_broker_files(conn, files)
    click.echo(f"broker 用户 users: {files.password_file}, ACL: {files.acl_file}", err=True)
    click.echo(broker_users.RELOAD_HINT, err=True)


@main.command()
@JSON_OPTION
@click.pass_obj
def check(obj: Ctx, as_json: bool) -> None:
    """Verify every ledger and money invariant on the live database; exit 1 on any violation."""
    conn = obj.db()
    violations = all_violations(conn)
    data = {
        "ok": not violations,
        "ledger_sum_fen": ledger.ledger_sum(conn),
        "violations": [v.to_json() for v in violations],
        "quarantine": quarantine_summary(conn),
    }
    held = data["quarantine"]
    lines = [f"账本合计 ledger sum: {data['ledger_sum_fen']} fen"] + [
        f"违规 violation [{v.code}]: {v.detail}" for v in violations
    ]
    n = held["counts"]
    lines.append(
        f"待审核消费 held sales: 待处理 pending {n['pending']} "
        f"已接受 accepted {n['accepted']} 已拒绝 rejected {n['rejected']}"
    )
    lines += [
        f"  待处理 pending {p['terminal_id']}/{p['seq']} {p['canteen_id']} "
        f"{format_fen(p['amount_fen'])} [{p['reason']}]"
        for p in held["pending"]
    ]
    lines.append("正常 OK" if not violations else f"{len(violations)} violation(s)")
    emit(data, as_json, "\n".join(lines))
    sys.exit(0 if not violations else 1)


@main.command("mosquitto-config")
@click.option("--port", default=1883, show_default=True, type=int)
@click.option(
    "--data-dir",
    default=None,
    help="The broker's persistence folder (created if missing). Default: <data folder>/mosquitto.",
)
@click.option(
    "--listen", default="127.0.0.1", show_default=True, help='Address to bind ("" or 0.0.0.0: every one).'
)
@click.option("--cafile", default=None, help="TLS: CA certificate (with --certfile and --keyfile).")
@click.option("--certfile", default=None, help="TLS: the broker's certificate.")
@click.option("--keyfile", default=None, help="TLS: the broker's private key.")
@click.pass_obj
def mosquitto_config(
    obj: Ctx,
    port: int,
    data_dir: str | None,
    listen: str,
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
) -> None:
    """Print the project's Mosquitto configuration (locked: no anonymous client, a user per
    terminal, an ACL, client id = user name) and write its password and ACL files."""
    if any((cafile, certfile, keyfile)) and not all((cafile, certfile, keyfile)):
        raise click.UsageError("TLS 需要同时提供 --cafile --certfile --keyfile (TLS needs all three)")
    if data_dir is None:
        obj.announce()
        data_dir = os.path.join(obj.home, "mosquitto")
    data_dir = os.path.abspath(data_dir)
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as exc:
        raise DomainError(
            "invalid_input",
            f"cannot create the broker data folder {data_dir}: {exc.strerror}",
            zh=f"无法创建 Mosquitto 数据目录 {data_dir}",
        ) from exc
    click.echo(f"Mosquitto 数据目录 / broker data folder: {data_dir}", err=True)
    conn = obj.db()
    files = _broker_files(obj)
    broker_users.write_broker_files(conn, files)
    click.echo(
        render_mosquitto_conf(
            port,
            data_dir,
            listen=listen,
            password_file=str(files.password_file),
            acl_file=str(files.acl_file),
            cafile=cafile,
            certfile=certfile,
            keyfile=keyfile,
        )
    )
    click.echo(broker_users.RELOAD_HINT + " (after provision-terminal / revoke-terminal)", err=True)


@click.command("terminals")
@JSON_OPTION
@click.pass_obj
def terminals_report(obj: Ctx, as_json: bool) -> None:
    """Every terminal: state, last heartbeat, watermark, and two live processes on one identity."""
    rows = fleet(obj.db())
    when = lambda ms: china_datetime(ms).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"  # noqa: E731
    lines = []
    for t in rows:
        lines.append(
            f"终端 {t['terminal_id']} 食堂 {t['canteen_id']} {t['state']} "
            f"心跳 last status {when(t['last_status_ms'])} "
            f"未上传 pending {t['pending'] if t['pending'] is not None else '-'}"
        )
        dup = t["duplicate_identity"]
        if dup:
            lines.append(
                f"  【终端身份重复 duplicate identity】 {len(dup['instances'])} processes "
                f"({', '.join(dup['instances'])}), last seen {when(dup['at_ms'])}"
            )
    emit({"terminals": rows}, as_json, lines or ["无终端 no terminals"])


for _group in (registry, people, money, qr, ecny, limits, tokens, database):  # each lists its commands
    for _command in _group.COMMANDS:
        main.add_command(_command)
main.add_command(faces.faces)
money.report.add_command(terminals_report)
