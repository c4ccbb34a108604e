"""``canteen-server``: run the server, and the clerks' batch jobs.

Domain errors become one clear line on stderr and exit code 2; ``check`` exits 1 when an
invariant is violated. Every command has ``--help``; reporting commands take ``--json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import click

from server.app import create_app, default_home, write_config_template
from server.books import ledger
from server.cli import (
    backup,
    database,
    ecny,
    faces,
    limits,
    money,
    people,
    qr,
    registry,
    shop_reports,
    tokens,
    trace,
    updates,
    users,
)
from server.cli import fleet as fleet_cli
from server.cli.broker_folder import broker_data_folder
from server.cli.nats_config import nats_config
from server.cli.output import JSON_OPTION, emit
from server.closing.check import all_violations, quarantine_summary, record_check, reversal_summary
from server.infra import access_log
from server.infra import public_url as public_url_config
from server.infra.auth import create_token
from server.infra.db import open_db, shown, write_txn
from server.infra.keys import load_or_create_secret
from server.registry import broker_users, enrolment, rotation
from server.registry.terminals import fleet, provision
from server.registry.updates import release_public_key
from server.service import ServerService
from shared.broker import EmbeddedBroker, render_mosquitto_conf
from shared.cli_edge import DomainGroup
from shared.clock import SystemClock, china_datetime
from shared.log_setup import configure as configure_logging
from shared.money import format_fen
from shared.mqtt import redacted_url
from shared.private_files import write_private
from shared.sd_notify import Watchdog, notify


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
@click.option(
    "--log-json/--no-log-json",
    envvar="CANTEEN_LOG_JSON",
    default=False,
    help="Logs as one JSON object per line (request ids, sale ids) on stderr; env CANTEEN_LOG_JSON=1.",
)
@click.option("--log-level", envvar="CANTEEN_LOG_LEVEL", default="INFO", show_default=True)
@click.pass_obj
def run(obj: Ctx, broker_url: str, host: str, port: int, log_json: bool, log_level: str) -> None:
    """Run the HTTP API, the MQTT ingest worker and the delta publisher until Ctrl-C.

    Under systemd (Type=notify) it says READY once serving and pings the watchdog while its
    workers live (deploy/systemd/canteen-server.service)."""
    configure_logging(log_level, json_lines=log_json, filters=[access_log.RequestIdFilter()])
    broker = None
    if not broker_url:
        broker = EmbeddedBroker(1883).start()
        broker_url = broker.url
        click.echo(f"embedded MQTT broker on {broker_url}")
    service = ServerService(broker_url, app=obj.app, http_host=host, http_port=port).start()
    click.echo(f"server: {service.base_url}  broker: {redacted_url(broker_url)}")  # no password
    notify("READY=1")
    watchdog = Watchdog(service.healthy).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    notify("STOPPING=1")
    watchdog.stop()
    service.stop()
    if broker is not None:
        broker.stop()


@main.command("provision-terminal")
@click.argument("canteen_id")
@click.option("--id", "terminal_id", default=None, help="Terminal id (default: next T####).")
@click.option("--broker", "broker_url", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option(
    "--server-url",
    default=None,
    help="The server as the terminal reaches it (default: the address it enrols through; "
    "with --with-secret: http://127.0.0.1:8080).",
)
@click.option(
    "--with-secret",
    is_flag=True,
    help="The old way, for a laptop or a test: register the terminal now and print its config "
    "with its secret (or write it with --out) instead of an enrolment code.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --with-secret: write the config to this file, mode 0600.",
)
@JSON_OPTION
@click.pass_obj
def provision_terminal(
    obj: Ctx,
    canteen_id: str,
    terminal_id: str | None,
    broker_url: str,
    server_url: str | None,
    with_secret: bool,
    out_path: Path | None,
    as_json: bool,
) -> None:
    """Issue a one-time enrolment code for a new terminal of a canteen (注册码).

    On the terminal: canteen-terminal enrol --server https://… CODE (within 24 hours; the
    code works once). --with-secret registers it at once and hands out its secret instead
    (to stdout for a pipe, or --out FILE, mode 0600)."""
    if out_path is not None and not with_secret:
        raise click.UsageError("--out 仅与 --with-secret 一起使用 (--out needs --with-secret)")
    if with_secret:
        _provision_with_secret(obj, canteen_id, terminal_id, broker_url, server_url, out_path)
        return
    conn = obj.db()
    now = SystemClock().now_ms()
    with write_txn(conn):
        issued = enrolment.issue(
            conn, canteen_id, now, broker_url=broker_url, server_url=server_url or "", terminal_id=terminal_id
        )
    expires = china_datetime(issued.expires_at_ms).strftime("%Y-%m-%d %H:%M")
    emit(
        issued.to_json(),
        as_json,
        [
            f"终端 terminal {issued.terminal_id} · 食堂 canteen {issued.canteen_id}",
            f"注册码 enrolment code: {issued.code}",
            f"有效期至 valid until {expires}（一次有效 one use）",
            f"在终端上 on the terminal: canteen-terminal enrol --server <https://server> {issued.code}",
        ],
    )


def _provision_with_secret(
    obj: Ctx,
    canteen_id: str,
    terminal_id: str | None,
    broker_url: str,
    server_url: str | None,
    out_path: Path | None,
) -> None:
    if out_path is not None:
        # before provisioning: a folder that does not exist yet (/etc/canteen on a fresh Pi)
        # must not leave a terminal registered whose secret was never written anywhere
        out_path.parent.mkdir(parents=True, exist_ok=True)
    conn = obj.db()
    key = obj.app.extensions["canteen_server_key"]
    with write_txn(conn):
        creds = provision(conn, canteen_id, SystemClock().now_ms(), key.public_hex, terminal_id)
    _sync_broker(obj, conn)
    release = release_public_key(obj.app.config["RELEASE_PUBLIC_KEY_FILE"])  # pinned for signed updates
    config = json.dumps(
        {
            **creds.to_json(),
            "broker_url": broker_url,
            "server_url": server_url or "http://127.0.0.1:8080",
            **({"release_public_key": release} if release else {}),
        },
        indent=2,
    )
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
    """Take a terminal out of service: remove its broker user and ACL lines (and reload the
    broker when MQTT_RELOAD_COMMAND is set); from now on the server refuses its requests and
    its sales dated from now on. An enrolment code still waiting for it is cancelled."""
    conn = obj.db()
    with write_txn(conn):
        done = enrolment.retire(conn, terminal_id, SystemClock().now_ms())
    _sync_broker(obj, conn)
    if done == "cancelled":
        click.echo(f"注册码已作废 enrolment code cancelled: {terminal_id}")
    else:
        click.echo(f"终端已停用 terminal revoked: {terminal_id}")


@main.command("rotate-terminal")
@click.argument("terminal_id")
@JSON_OPTION
@click.pass_obj
def rotate_terminal(obj: Ctx, terminal_id: str, as_json: bool) -> None:
    """Rotate a terminal's key (HMAC secret and broker password) without losing unsent sales.

    The running server offers the terminal its next key (sealed under the current one) at
    its next heartbeat; the terminal switches, the server then makes the new key current,
    accepts the old one 72 hours more for sales already on their way, and rewrites the
    broker's password file. A key that may be stolen is not rotated but revoked."""
    conn = obj.db()
    with write_txn(conn):
        started = rotation.start(conn, terminal_id, SystemClock().now_ms())
    data = {
        "terminal_id": started.terminal_id,
        "current_key_id": started.current_key_id,
        "next_key_id": started.next_key_id,
    }
    emit(
        data,
        as_json,
        f"终端 {terminal_id} 密钥更换已开始 key rotation started: "
        f"{started.current_key_id} → {started.next_key_id}"
        "（终端下次心跳时取得新密钥 the terminal takes it at its next heartbeat）",
    )


def _broker_files(obj: Ctx) -> broker_users.BrokerFiles:
    return broker_users.BrokerFiles.from_config(obj.app.config)


def _sync_broker(obj: Ctx, conn) -> None:  # noqa: ANN001
    """Rewrite the broker's password and ACL files and reload the broker when
    MQTT_RELOAD_COMMAND is set; else say (on stderr) how to reload them."""
    files = _broker_files(obj)
    reloaded = broker_users.apply(conn, obj.app.config)
    click.echo(f"broker 用户 users: {files.password_file}, ACL: {files.acl_file}", err=True)
    if reloaded:
        click.echo("broker 已重新加载 reloaded (MQTT_RELOAD_COMMAND or MQTT_PID_FILE)", err=True)
    else:
        click.echo(broker_users.RELOAD_HINT, err=True)


@main.command()
@JSON_OPTION
@click.pass_obj
def check(obj: Ctx, as_json: bool) -> None:
    """Verify every ledger and money invariant on the live database; exit 1 on any violation."""
    conn = obj.db()
    violations = all_violations(conn)
    record_check(conn, violations, SystemClock().now_ms(), "canteen-server check")
    data = {
        "ok": not violations,
        "ledger_sum_fen": ledger.ledger_sum(conn),
        "violations": [v.to_json() for v in violations],
        "quarantine": quarantine_summary(conn),
        "reversals": reversal_summary(conn),
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
    rv = data["reversals"]
    lines.append(
        f"冲正 reversals: 已入账 applied {rv['counts']['applied']} "
        f"待原交易 waiting {rv['counts']['pending']} 已拒绝 rejected {rv['counts']['rejected']}"
    )
    lines += [
        f"  待原交易 waiting {w['terminal_id']}/R{w['seq']} (sale {w['terminal_id']}/{w['sale_seq']}) "
        f"{format_fen(w['amount_fen'])}"
        for w in rv["waiting"]
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
    data_dir = broker_data_folder(obj, data_dir, "mosquitto", "Mosquitto")
    click.echo(f"Mosquitto 数据目录 / broker data folder: {data_dir}", err=True)
    conn = obj.db()
    files = _broker_files(obj)
    broker_users.write_broker_files(conn, files)
    # the server signals this pid after it rewrites the users and ACL (MQTT_PID_FILE)
    pid_file = os.path.join(data_dir, "mosquitto.pid")
    if os.path.abspath(obj.app.config["MQTT_PID_FILE"]) != pid_file:
        click.echo(
            f"设置 set MQTT_PID_FILE={pid_file} (or MQTT_RELOAD_COMMAND) for reloads at once", err=True
        )
    click.echo(
        render_mosquitto_conf(
            port,
            data_dir,
            f"# the server sends SIGHUP to this pid after a revocation, an enrolment or a key rotation\n"
            f"pid_file {pid_file}\n",
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


main.add_command(fleet_cli.fleet)
# each group's module lists its commands
for _group in (registry, people, money, qr, ecny, limits, tokens, updates, users, backup, trace, database):
    for _command in _group.COMMANDS:
        main.add_command(_command)
main.add_command(faces.faces)
main.add_command(nats_config)
money.report.add_command(terminals_report)
money.report.add_command(shop_reports.shop_report)
money.report.add_command(shop_reports.day_closes_report)
