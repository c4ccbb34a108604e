"""A chaos run's cluster (``canteen-sim chaos --cluster``): 3 NATS nodes, PostgreSQL, 2 servers.

:class:`ChaosCluster` starts a PostgreSQL of its own (:class:`shared.pg_server.PostgresServer`
with the project's settings: ``fsync`` stays on, a restart must lose nothing), a 3-node NATS
cluster (:class:`shared.nats_broker.NatsCluster`, JetStream keeping MQTT sessions and
retained messages on every node) and two ``canteen-server run`` processes on that database,
each given every node (its own first). Both subscribe to every sale — no shared
subscription: NATS 2.9 grants ``$share/…`` and delivers nothing — so each sale reaches both
and both try to apply it; the unique key on (terminal, seq) must keep that to once. One of
them holds the run-once roles (delta publishing) through a PostgreSQL advisory lock.

Each part can be struck and brought back: :meth:`kill_node` / :meth:`start_node` (SIGKILL,
then the same data folder and ports), :meth:`kill_server` / :meth:`start_server`,
:meth:`halt_database` / :meth:`resume_database`.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from shared.broker import free_port
from shared.mqtt import BrokerAddress, MqttLink
from shared.nats_broker import NatsCluster
from shared.pg_server import PostgresServer
from shared.protocol import topics
from simulator.chaos.plan import CLUSTER_NODES, CLUSTER_SERVERS
from simulator.chaos.procs import ServerProcess

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 90.0  # JetStream elects its leaders: seconds on a quiet machine, a minute loaded
RESTART_TIMEOUT_S = 90.0  # a server process started while PostgreSQL is down retries this long


class ChaosCluster:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.pg: PostgresServer | None = None
        self.nats: NatsCluster | None = None
        self.servers: list[ServerProcess] = []
        self.database_url = ""

    # --- start -------------------------------------------------------------------------

    def start_database(self) -> str:
        """PostgreSQL with the project's settings on a free port; its URL."""
        self.pg = PostgresServer().start()
        self.database_url = self.pg.url_for("postgres")
        return self.database_url

    def start_brokers(self) -> list[str]:
        """The three NATS nodes, each ready (a retained message round-trips); their URLs."""
        self.nats = NatsCluster(CLUSTER_NODES).start()
        for node in self.nats.nodes:
            if not _retained_roundtrip(node.url, f"{topics.PREFIX}/probe/{node.server_name}"):
                raise RuntimeError(f"NATS node {node.server_name} not ready in {READY_TIMEOUT_S:.0f} s")
        return self.nats.urls

    def start_servers(self, home: Path) -> list[ServerProcess]:
        assert self.nats is not None
        urls = self.nats.urls
        for i in range(CLUSTER_SERVERS):
            mine = urls[i % len(urls) :] + urls[: i % len(urls)]  # its own node first
            self.servers.append(
                ServerProcess(
                    home,
                    ",".join(mine),
                    free_port(),
                    env={"CANTEEN_DATABASE_URL": self.database_url},
                    name=f"server-{i + 1}",
                ).start()
            )
        return self.servers

    # --- faults ------------------------------------------------------------------------

    def kill_node(self, i: int) -> None:
        assert self.nats is not None
        self.nats.nodes[i].kill()

    def node_up(self, i: int) -> bool:
        assert self.nats is not None
        return self.nats.nodes[i].pid is not None

    def start_node(self, i: int) -> None:
        assert self.nats is not None
        if not self.node_up(i):
            self.nats.nodes[i].start()

    def kill_server(self, i: int) -> None:
        self.servers[i].kill()

    def start_server(self, i: int) -> None:
        """Start server process ``i`` again; while PostgreSQL is down it exits at once, so
        try again until it answers (or :data:`RESTART_TIMEOUT_S` passed)."""
        server = self.servers[i]
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while not server.running:
            try:
                server.start()
            except (RuntimeError, TimeoutError) as exc:
                server.kill()  # reap what is left of it
                if time.monotonic() > deadline:
                    raise
                log.info("server-%d did not start (%s); again in 1 s", i + 1, exc)
                time.sleep(1.0)

    def halt_database(self, how: str) -> None:
        assert self.pg is not None
        self.pg.halt(how)

    def resume_database(self) -> None:
        assert self.pg is not None
        if not self.pg.running:
            self.pg.resume()

    def restarts(self) -> dict[str, int]:
        return {f"server-{i + 1}": s.starts - 1 for i, s in enumerate(self.servers)}

    # --- the end -----------------------------------------------------------------------

    def heal(self) -> None:
        """Every node, the database and every server process up (the drain's first step)."""
        for i in range(CLUSTER_NODES):
            self.start_node(i)
        self.resume_database()
        for i in range(len(self.servers)):
            self.start_server(i)

    def stop_processes(self) -> None:
        """Servers and brokers stop; the database stays up for the audit."""
        for s in self.servers:
            s.terminate()
        if self.nats is not None:
            for node in self.nats.nodes:
                _keep_log(Path(node.data_dir) / "nats.log", self.dir / f"nats-{node.server_name}.log")
            self.nats.stop()

    def stop_database(self) -> None:
        if self.pg is not None:
            _keep_log(self.pg.log, self.dir / "postgresql.log")
            self.pg.stop()


def _keep_log(src: Path, dst: Path) -> None:
    try:
        shutil.copyfile(src, dst)
    except OSError as exc:
        log.debug("log %s not kept: %s", src, exc)


def _retained_roundtrip(url: str, topic: str) -> bool:
    """Publish a retained message on the node and read it back through a subscription."""
    got: list[bytes] = []
    link = MqttLink(
        f"probe-{topic.rsplit('/', 1)[-1]}",
        BrokerAddress.parse(url),
        subscriptions=[(topic, 1)],
        on_message=lambda _t, payload: got.append(payload),
        backoff_max_s=0.5,
    ).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        if not link.wait_connected(READY_TIMEOUT_S):
            return False
        while time.monotonic() < deadline:
            if link.publish(topic, b"ready", retain=True):
                until = time.monotonic() + 2.0
                while time.monotonic() < until:
                    if got:
                        return True
                    time.sleep(0.05)
            time.sleep(0.5)
        return False
    finally:
        link.stop()
