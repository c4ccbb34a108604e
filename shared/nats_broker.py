"""NATS as the project's MQTT broker (issue 16): the configuration, and a child process.

nats-server (2.9+) speaks MQTT 3.1.1 with what the project uses: QoS 1, retained messages
(also through ``+``/``#`` subscriptions), last wills, persistent sessions. It needs a
``server_name`` on every node and JetStream on (MQTT state lives in JetStream streams; its
store is a folder in the data folder). A cluster of nodes shares retained messages and
sessions, so a terminal can move to another node when its own dies.

NATS keeps its users in its own ``authorization`` block instead of Mosquitto's password and
ACL files: :func:`authorization_conf` maps the same rules (``server.registry.broker_users``)
onto NATS subjects, where MQTT ``/`` becomes ``.``, ``+`` becomes ``*`` and ``#`` becomes
``>``. Passwords are bcrypt hashes (NATS accepts ``$2a$``). Unlike Mosquitto, NATS cannot
bind the client id to the user name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from shared.broker import ChildBroker, free_port

BCRYPT_COST = 10  # every connect verifies one hash: a fleet reconnecting after a node loss pays it


# NATS delivers QoS 1 messages to an MQTT session through a JetStream consumer on
# ``$MQTT.sub.<random>``: without this subscribe permission every QoS 1 SUBSCRIBE is refused
MQTT_DELIVERY = "$MQTT.sub.>"
CLUSTER_REPLICAS = 3  # copies of MQTT's retained messages and sessions in a cluster


def mqtt_to_subject(topic_filter: str) -> str:
    """An MQTT topic filter as the NATS subject NATS's MQTT bridge uses for it."""
    parts = topic_filter.split("/")
    if any(not p or "." in p or " " in p or (p in ("*", ">")) for p in parts):
        raise ValueError(f"topic not mappable to a NATS subject: {topic_filter!r}")
    return ".".join("*" if p == "+" else ">" if p == "#" else p for p in parts)


@dataclass(frozen=True)
class NatsUser:
    name: str
    password_hash: str
    publish: tuple[str, ...]  # MQTT topic filters
    subscribe: tuple[str, ...]


def nats_password_hash(password: str, *, cost: int = BCRYPT_COST) -> str:
    """The bcrypt hash NATS's ``password`` field accepts (``$2a$`` form)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost, prefix=b"2a")).decode()


def _subjects(filters: Sequence[str]) -> list[str]:
    """MQTT ``a/#`` also matches ``a`` itself: NATS subscribes both ``a.>`` and ``a``."""
    out: list[str] = []
    for f in filters:
        out.append(mqtt_to_subject(f))
        if f.endswith("/#"):
            out.append(mqtt_to_subject(f[:-2]))
    return out


def authorization_conf(users: Sequence[NatsUser]) -> str:
    """An ``authorization { users = [...] }`` block: each user with its publish and subscribe
    allow lists, mapped from MQTT topic filters. Nothing not listed is allowed."""
    lines = ["authorization {", "  users = ["]
    for u in users:
        perms = {
            "publish": {"allow": _subjects(u.publish)},
            "subscribe": {"allow": _subjects(u.subscribe) + [MQTT_DELIVERY]},
        }
        lines.append(
            f"    {{user: {json.dumps(u.name)}, password: {json.dumps(u.password_hash)}, "
            f"permissions: {json.dumps(perms)}}}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def render_nats_conf(
    *,
    server_name: str,
    mqtt_port: int,
    data_dir: str,
    listen: str = "127.0.0.1",
    client_port: int = -1,
    cluster_port: int | None = None,
    routes: Sequence[str] = (),
    cluster_name: str = "canteen",
    authorization_file: str | None = None,
    anonymous: bool = False,
    conf_dir: str | None = None,
) -> str:
    """The project's nats-server configuration: MQTT on ``mqtt_port``, JetStream storing in
    ``data_dir/jetstream``, the NATS client port (``-1``: a random one, which nothing of ours
    uses). Locked unless ``anonymous`` (tests only): ``authorization_file`` (written by the
    server, :func:`authorization_conf`) is included. ``cluster_port`` and ``routes``
    (``nats-route://host:port``) make the node one of a cluster. The configuration must be
    saved in ``conf_dir`` (default ``data_dir``): the include is relative to it."""
    if not anonymous and not authorization_file:
        raise ValueError("a locked broker needs an authorization file")
    out = [
        "# canteen: nats-server as the MQTT broker (rendered by canteen-server nats-config)",
        f"server_name: {json.dumps(server_name)}",
        f"listen: {json.dumps(f'{listen}:{client_port}')}",
        f"jetstream {{ store_dir: {json.dumps(str(Path(data_dir) / 'jetstream'))} }}",
        "# the server sends SIGHUP to this pid after it rewrites the users (MQTT_PID_FILE)",
        f"pid_file: {json.dumps(str(Path(data_dir) / 'nats.pid'))}",
        # ack_wait: how long a QoS 1 message waits for a PUBACK before redelivery
    ]
    mqtt = f'listen: {json.dumps(f"{listen}:{mqtt_port}")}, ack_wait: "30s", max_ack_pending: 1000'
    if cluster_port is not None:
        # fixed, not "as many nodes as are up": a node first used while another is down would
        # otherwise ask for 2 replicas of streams that exist with 3, and never get them
        mqtt += f", stream_replicas: {CLUSTER_REPLICAS}"
    out.append(f"mqtt {{ {mqtt} }}")
    if cluster_port is not None:
        out.append(
            f"cluster {{ name: {json.dumps(cluster_name)}, listen: {json.dumps(f'{listen}:{cluster_port}')}, "
            f"routes: {json.dumps(list(routes))} }}"
        )
    if anonymous:
        out.append("# TESTS ONLY: anonymous clients, no permissions")
    else:
        # nats-server resolves an include against the including file's folder, which is
        # the data folder (``conf_dir``) where the configuration is saved
        rel = os.path.relpath(authorization_file, conf_dir or data_dir)  # type: ignore[arg-type]
        out.append(f"include {json.dumps(rel)}")
    return "\n".join(out) + "\n"


class NatsBroker(ChildBroker):
    """One nats-server child process with MQTT on a free port (one node, or one of a cluster)."""

    kind = "nats"
    program = "nats-server"
    binaries = ("nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server")
    stop_wait_s = 10.0

    def __init__(
        self,
        *,
        server_name: str = "n1",
        mqtt_port: int | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        data_dir: str | None = None,
        authorization_file: str | None = None,
    ) -> None:
        self.server_name = server_name
        self.port = mqtt_port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.authorization_file = authorization_file
        super().__init__(data_dir, "canteen-nats-")

    def start(self, timeout_s: float = 15.0) -> NatsBroker:
        binary = self._binary()
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        conf = Path(self.data_dir) / "nats.conf"
        conf.write_text(
            render_nats_conf(
                server_name=self.server_name,
                mqtt_port=self.port,
                data_dir=self.data_dir,
                cluster_port=self.cluster_port,
                routes=self.routes,
                authorization_file=self.authorization_file,
                anonymous=self.authorization_file is None,
            )
        )
        log_file = Path(self.data_dir) / "nats.log"
        with open(log_file, "ab") as log_out:
            proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log_out, stderr=log_out)
        said = lambda: log_file.read_text(errors="replace")[-800:]  # noqa: E731
        self._watch_start(proc, self.port, timeout_s, said)
        return self

    def kill(self) -> None:
        """SIGKILL, as a lost machine would; the data folder stays for a restart."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


class NatsCluster:
    """``size`` nats-server nodes on one machine, on free ports, routed to each other."""

    kind = "nats-cluster"

    def __init__(self, size: int = 3, *, authorization_file: str | None = None) -> None:
        self.base_dir = tempfile.mkdtemp(prefix="canteen-nats-cluster-")
        cluster_ports = [free_port() for _ in range(size)]
        routes = [f"nats-route://127.0.0.1:{p}" for p in cluster_ports]
        self.nodes = [
            NatsBroker(
                server_name=f"n{i + 1}",
                cluster_port=cluster_ports[i],
                routes=[r for j, r in enumerate(routes) if j != i],
                data_dir=str(Path(self.base_dir) / f"n{i + 1}"),
                authorization_file=authorization_file,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """Every node, comma-separated (what a terminal's ``broker_url`` may hold)."""
        return ",".join(self.urls)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)
