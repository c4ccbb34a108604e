"""``canteen-server``: run the server, and the clerks' batch jobs.

Domain errors become one clear line on stderr and exit code 2; ``check`` exits 1 when an
invariant is violated. Every command has ``--help``; reporting commands take ``--json``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click

from server.app import create_app
from server.books import ledger
from server.cli import ecny, faces, money, people, qr, registry
from server.cli.output import JSON_OPTION, DomainGroup, emit
from server.closing.check import all_violations, quarantine_summary
from server.infra.auth import ROLES, create_token
from server.infra.db import open_db, write_txn
from server.registry.terminals import provision
from server.service import ServerService
from shared.broker import EmbeddedBroker, render_mosquitto_conf
from shared.clock import SystemClock
from shared.money import format_fen


class Ctx:
    def __init__(self, home: str | None) -> None:
        self._home = home
        self._app = None

    @property
    def app(self):  # noqa: ANN201
        if self._app is None:
            self._app = create_app({"HOME": self._home} if self._home else None)
        return self._app

    def db(self):  # noqa: ANN201
        return open_db(self.app.config["DATABASE"])


@click.group(cls=DomainGroup)
@click.option("--home", envvar="CANTEEN_HOME", help="Data folder (default ./var).")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """Canteen one-card central server (食堂一卡通 中心服务器)."""
    ctx.obj = Ctx(home)


@main.command()
@JSON_OPTION
@click.pass_obj
def init(obj: Ctx, as_json: bool) -> None:
    """Create (or migrate) the database and the server key; print the first admin token."""
    conn = obj.db()
    with write_txn(conn):
        has_admin = conn.execute("SELECT 1 FROM tokens WHERE role = 'admin'").fetchone()
        token = (
            None if has_admin else create_token(conn, "admin", SystemClock().now_ms(), label="first admin")
        )
    data = {"database": obj.app.config["DATABASE"], "admin_token": token}
    text = f"数据库 database: {data['database']}\n" + (
        f"管理员令牌 admin token (shown once): {token}" if token else "admin token already issued"
    )
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
    click.echo(f"server: {service.base_url}  broker: {broker_url}")
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
@click.pass_obj
def provision_terminal(
    obj: Ctx, canteen_id: str, terminal_id: str | None, broker_url: str, server_url: str
) -> None:
    """Register a terminal for a canteen and print its config (JSON, with its secret)."""
    conn = obj.db()
    key = obj.app.extensions["canteen_server_key"]
    with write_txn(conn):
        creds = provision(conn, canteen_id, SystemClock().now_ms(), key.public_hex, terminal_id)
    click.echo(json.dumps({**creds.to_json(), "broker_url": broker_url, "server_url": server_url}, indent=2))


@main.command("create-token")
@click.option("--role", type=click.Choice(list(ROLES)), required=True)
@click.option("--unit", "unit_id", default=None, help="Unit id (clerks).")
@click.option("--operator", default=None, help="Operator name (operators).")
@click.option("--holder", "holder_id", default=None, help="Cardholder id (diners).")
@click.option("--label", default="")
@click.pass_obj
def create_token_cmd(
    obj: Ctx, role: str, unit_id: str | None, operator: str | None, holder_id: str | None, label: str
) -> None:
    """Issue an API token for a person; it is printed once."""
    conn = obj.db()
    with write_txn(conn):
        token = create_token(
            conn,
            role,
            SystemClock().now_ms(),
            unit_id=unit_id,
            operator=operator,
            holder_id=holder_id,
            label=label,
        )
    click.echo(token)


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
@click.option("--data-dir", default="/var/lib/mosquitto", show_default=True)
def mosquitto_config(port: int, data_dir: str) -> None:
    """Print the project's Mosquitto configuration for this port and data folder."""
    click.echo(render_mosquitto_conf(port, data_dir))


for _group in (registry, people, money, qr, ecny):  # each command group's module lists its commands
    for _command in _group.COMMANDS:
        main.add_command(_command)
main.add_command(faces.faces)
