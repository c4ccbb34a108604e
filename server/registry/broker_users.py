"""The broker's users and ACL, kept in step with the terminals table.

Mosquitto (rendered locked by ``canteen-server mosquitto-config``) reads two files that the
server writes here: a password file with one user per terminal that is not revoked (user
name = terminal id, password derived from its secret, :func:`shared.protocol.broker_password`)
plus the user ``server`` (a random password kept 0600 in the data folder, never printed),
and an ACL file in which a terminal may write only its own ``up/`` topics and read only its
own acks, its own status and the broadcasts. Provisioning and revocation rewrite both files
(atomically); Mosquitto re-reads them on SIGHUP (``kill -HUP <pid>``), and then drops a
revoked terminal that is still connected. :func:`apply` reloads the broker after every
rewrite — ``MQTT_RELOAD_COMMAND`` when set (for instance ``systemctl reload mosquitto``),
else SIGHUP to the Mosquitto named in ``MQTT_PID_FILE`` — so a revocation or a rotated
password holds at the broker at once, without a person typing the reload.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import signal
import sqlite3
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.broker import mosquitto_password_line
from shared.nats_broker import NatsUser, authorization_conf, nats_password_hash
from shared.protocol import broker_password, topics

log = logging.getLogger(__name__)

SERVER_USER = "server"
BROKER_PROCESSES = ("mosquitto", "nats-server")  # what a pid file may name to get a SIGHUP
RELOAD_HINT = "重新加载 broker 配置 reload the broker: kill -HUP $(pidof mosquitto)"


@dataclass(frozen=True)
class BrokerFiles:
    password_file: Path
    acl_file: Path
    server_password_file: Path

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BrokerFiles:
        return cls(
            Path(config["MQTT_PASSWORD_FILE"]),
            Path(config["MQTT_ACL_FILE"]),
            Path(config["MQTT_SERVER_PASSWORD_FILE"]),
        )


def server_password(path: Path, *, create: bool = True) -> str | None:
    """The server's own broker password: generated once, kept in a 0600 file."""
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def active_terminals(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(terminal id, secret hex) of every terminal that is not revoked."""
    return [
        (r[0], r[1])
        for r in conn.execute("SELECT id, secret_hex FROM terminals WHERE state <> 'revoked' ORDER BY id")
    ]


def server_permissions() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) topic filters of the server's own user: the one rule both the
    Mosquitto ACL and the NATS authorization are rendered from."""
    prefix = topics.PREFIX
    return (f"{prefix}/t/+/down/#", f"{prefix}/down/#"), (f"{prefix}/t/+/up/#", f"{prefix}/down/#")


def terminal_permissions(tid: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) topic filters of one terminal: it writes only its own ``up/``
    topics, reads its own status back (duplicate identity), its own ``down/`` topics and the
    broadcasts."""
    prefix = topics.PREFIX
    return (f"{prefix}/t/{tid}/up/#",), (
        topics.status(tid),
        f"{prefix}/t/{tid}/down/#",
        topics.DELTA,
        topics.SERVER,
    )


def acl_text(terminal_ids: list[str]) -> str:
    lines = [
        "# Written by canteen-server (provision-terminal / revoke-terminal): do not edit by hand.",
        "# Reload after a change: kill -HUP <mosquitto pid>",
    ]
    for user, (publish, subscribe) in [(SERVER_USER, server_permissions())] + [
        (tid, terminal_permissions(tid)) for tid in terminal_ids
    ]:
        lines += ["", f"user {user}"]
        lines += [f"topic write {t}" for t in publish]
        lines += [f"topic read {t}" for t in subscribe]
    return "\n".join(lines) + "\n"


def nats_authorization_text(conn: sqlite3.Connection, server_password_file: Path) -> str:
    """The NATS ``authorization`` block for the same users and rules as the Mosquitto files
    (``canteen-server nats-config`` writes it; nats-server re-reads it on SIGHUP)."""
    password = server_password(server_password_file)
    assert password is not None
    users = [NatsUser(SERVER_USER, nats_password_hash(password), *server_permissions())]
    users += [
        NatsUser(tid, nats_password_hash(broker_password(bytes.fromhex(sec))), *terminal_permissions(tid))
        for tid, sec in active_terminals(conn)
    ]
    return authorization_conf(users)


def write_nats_authorization(conn: sqlite3.Connection, server_password_file: Path, path: Path) -> None:
    """Write :func:`nats_authorization_text` atomically, 0640 (it holds password hashes)."""
    _write_atomic(path, nats_authorization_text(conn, server_password_file))


def write_broker_files(conn: sqlite3.Connection, files: BrokerFiles) -> int:
    """Rewrite the password and ACL files from the terminals table; returns how many
    terminals may connect. The files are replaced atomically (Mosquitto never reads half)."""
    password = server_password(files.server_password_file)
    assert password is not None
    terminals = active_terminals(conn)
    passwd = [mosquitto_password_line(SERVER_USER, password)]
    passwd += [mosquitto_password_line(tid, broker_password(bytes.fromhex(sec))) for tid, sec in terminals]
    _write_atomic(files.password_file, "\n".join(passwd) + "\n")
    _write_atomic(files.acl_file, acl_text([tid for tid, _ in terminals]))
    return len(terminals)


def _write_atomic(path: Path, text: str) -> None:
    # 0640: hashes only, but nobody else's business; give the group to Mosquitto's user
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def reload_broker(config: Mapping[str, Any]) -> bool:
    """Tell the broker to re-read its files: run ``MQTT_RELOAD_COMMAND`` (no shell; 10 s at
    most) when set, else send SIGHUP to the Mosquitto whose pid is in ``MQTT_PID_FILE``
    (``mosquitto-config`` has it write one in its data folder). False when neither applies
    or it failed (logged at WARNING: the files are written, the broker has not read them)."""
    command = str(config.get("MQTT_RELOAD_COMMAND") or "").strip()
    if not command:
        return _signal_pid_file(str(config.get("MQTT_PID_FILE") or ""))
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        log.warning("broker_reload_failed: %s: %s", command, exc)
        return False
    if done.returncode != 0:
        log.warning(
            "broker_reload_failed: %s exited %d: %s",
            command,
            done.returncode,
            done.stderr.decode(errors="replace").strip()[:200],
        )
        return False
    log.info("broker reloaded (%s)", command)
    return True


def _signal_pid_file(pid_file: str) -> bool:
    """SIGHUP to the process named in ``pid_file`` if it is a running Mosquitto (a stale
    file naming some other process is left alone)."""
    if not pid_file or not os.path.exists(pid_file):
        return False
    try:
        pid = int(Path(pid_file).read_text().strip())
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError) as exc:
        log.warning("broker_reload_failed: %s: no running process (%s)", pid_file, exc)
        return False
    if name not in BROKER_PROCESSES:
        log.warning("broker_reload_failed: %s names pid %d, which is %r, not a broker", pid_file, pid, name)
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:  # another user's Mosquitto: set MQTT_RELOAD_COMMAND instead
        log.warning("broker_reload_failed: SIGHUP to %s %d: %s", name, pid, exc)
        return False
    log.info("broker reloaded (SIGHUP to %s %d)", name, pid)
    return True


def apply(conn: sqlite3.Connection, config: Mapping[str, Any]) -> bool:
    """Rewrite the broker's files from the terminals table and reload the broker when a
    reload command is configured; True when the broker has been told."""
    write_broker_files(conn, BrokerFiles.from_config(config))
    nats_file = str(config.get("MQTT_NATS_AUTHORIZATION_FILE") or "")
    if nats_file:  # NATS as the broker: its users too, from the same rules
        write_nats_authorization(conn, BrokerFiles.from_config(config).server_password_file, Path(nats_file))
    return reload_broker(config)
