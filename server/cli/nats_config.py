"""``canteen-server nats-config``: nats-server as the project's MQTT broker (issue 16).

Prints the node's configuration (MQTT listener, JetStream in the data folder, a
``server_name``, cluster routes when given) and writes the ``authorization`` block it
includes: the same users and rules as the Mosquitto password and ACL files
(:mod:`server.registry.broker_users`). Save the printed text as ``<data dir>/nats.conf``:
the include is relative to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from server.cli.broker_folder import broker_data_folder
from server.registry import broker_users
from shared.nats_broker import render_nats_conf


@click.command("nats-config")
@click.option("--port", default=1883, show_default=True, type=int, help="The MQTT port.")
@click.option("--data-dir", default=None, help="JetStream store and users. Default: <data folder>/nats.")
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: all).")
@click.option("--server-name", default="n1", show_default=True, help="Unique per node (NATS MQTT needs one).")
@click.option("--cluster-port", default=None, type=int, help="Route port: makes this node one of a cluster.")
@click.option("--route", "routes", multiple=True, help="Another node: nats-route://host:port (repeatable).")
@click.pass_obj
def nats_config(
    obj: Any,  # server.cli.root.Ctx (not imported: root imports this module)
    port: int,
    data_dir: str | None,
    listen: str,
    server_name: str,
    cluster_port: int | None,
    routes: tuple[str, ...],
) -> None:
    """Print a nats-server configuration with MQTT on (locked: a user per terminal, its
    permissions mapped from the Mosquitto ACL) and write its authorization file."""
    if routes and cluster_port is None:
        raise click.UsageError("--route 需要 --cluster-port (routes need --cluster-port)")
    data_dir = broker_data_folder(obj, data_dir, "nats", "NATS")
    files = broker_users.BrokerFiles.from_config(obj.app.config)
    auth_file = Path(data_dir) / "authorization.conf"
    broker_users.write_nats_authorization(obj.db(), files.server_password_file, auth_file)
    click.echo(f"NATS 数据目录 / broker data folder: {data_dir}", err=True)
    click.echo(
        render_nats_conf(
            server_name=server_name,
            mqtt_port=port,
            data_dir=data_dir,
            listen=listen,
            cluster_port=cluster_port,
            routes=routes,
            authorization_file=str(auth_file),
        )
    )
    if str(obj.app.config.get("MQTT_NATS_AUTHORIZATION_FILE") or "") != str(auth_file):
        click.echo(
            f"设置 set MQTT_NATS_AUTHORIZATION_FILE={auth_file} and "
            f"MQTT_PID_FILE={os.path.join(data_dir, 'nats.pid')}: the server then rewrites the users "
            "and reloads nats-server after provision-terminal / revoke-terminal",
            err=True,
        )
    click.echo(
        f"保存为 save as {os.path.join(data_dir, 'nats.conf')}; 终端变更后重新运行并 kill -HUP "
        "(after provision-terminal / revoke-terminal: run again, then kill -HUP <nats-server pid>)",
        err=True,
    )
