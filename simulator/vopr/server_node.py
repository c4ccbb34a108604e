"""The real server in the simulation: ingest worker, delta publisher, presence, the HTTP app.

:class:`ServerNode` wires the same pieces :class:`server.service.ServerService` starts —
:class:`~server.sales.ingest.IngestWorker`, :class:`~server.downstream.publisher.DeltaPublisher`,
:class:`~server.downstream.presence.PresenceBeacon`, the Flask app — to a
:class:`~simulator.vopr.network.SimLink` instead of MQTT and runs them without their
threads: :meth:`step` drains the ingest queue (one transaction per group, acks after the
commit), publishes new deltas and beats the presence when due. The terminals' HTTP calls
go to the same app through its test client (:mod:`simulator.vopr.http`). The clerks' jobs
(allocations, top-ups, lost cards, settlement, clearing) run through :meth:`admin`, inside
a write transaction on their own connection, as the CLI runs them.

**Crash.** :meth:`crash` drops the broker connection (the broker sends the "offline"
will) and closes every connection without committing: the database keeps exactly what was
committed. Crash points (:class:`~simulator.vopr.fuse.Fuse`): inside the ingest
transaction or its commit (``ingest_sql``), between the commit and the acks
(``ack_publish``: the n-th ack does not go out), while publishing deltas
(``delta_publish``), inside a clerk's job (``admin_sql``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flask.testing import FlaskClient

from server.app import create_app
from server.downstream.presence import PresenceBeacon
from server.downstream.publisher import DeltaPublisher
from server.infra.db import open_db, write_txn
from server.sales.ingest import IngestWorker
from shared.protocol import topics
from simulator.vopr.clock import NodeClock, SimTime
from simulator.vopr.fuse import Fuse, SimCrash
from simulator.vopr.network import SimBroker, SimLink

log = logging.getLogger(__name__)
T = TypeVar("T")
PRESENCE_S = 10
WorkerFactory = Callable[..., IngestWorker]


class ServerDown(Exception):
    """The server is not running (crashed, not yet restarted)."""


class ServerNode:
    def __init__(
        self,
        home: Path,
        time: SimTime,
        broker: SimBroker,
        *,
        key_hex: str,
        database: str | None = None,
        worker: WorkerFactory = IngestWorker,
        refund_to: str = "unit",
    ) -> None:
        self.time = time
        self.clock = NodeClock(time)
        self.broker = broker
        self._worker = worker
        key_file = home / "server" / "server_key.hex"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key_hex + "\n")  # from the seed: signatures replay byte for byte
        key_file.chmod(0o600)
        config: dict[str, Any] = {"HOME": str(home), "TESTING": True, "YEAR_END_REFUND_TO": refund_to}
        if database is not None:  # on the simulated disk (simulator.vopr.disk), not in home
            config["DATABASE"] = database
        self.app = create_app(config, clock=self.clock)
        self.db_path = str(self.app.config["DATABASE"])
        self.key = self.app.extensions["canteen_server_key"]
        self.client: FlaskClient = self.app.test_client()
        self.fuse = Fuse()
        self.up = False
        self.boots = 0
        self._conns: list[sqlite3.Connection] = []
        self._in_ingest = False
        self._next_beat_ms = 0

    # --- life ---------------------------------------------------------------------------

    def start(self) -> ServerNode:
        self.boots += 1
        self.fuse = Fuse()
        self.ingest_conn, self.publisher_conn, self.admin_conn = (self._open() for _ in range(3))
        # its presence says the newest delta version (PRESENCE_DELTA_VERSION): a terminal that
        # missed the last delta catches up without waiting for the next one
        self.presence = PresenceBeacon(self.key, self.clock, PRESENCE_S, conn=self._open())
        self.link: SimLink = self.broker.link(
            "server",
            [(topics.ALL_SALES, 1), (topics.ALL_STATUS, 1)],
            on_message=lambda topic, payload: self.ingest.submit(topic, payload),
            on_state=self.presence.on_state,
            will=self.presence.will,
        )
        self.presence.attach(self.link)  # type: ignore[arg-type]  # the simulated link stands in for MqttLink
        self.publisher = DeltaPublisher(self.publisher_conn, self.key, self._publish, self.clock)
        self.ingest = self._worker(self.ingest_conn, self.clock, self._publish)
        self.up = True
        self.link.start()
        self._next_beat_ms = self.time.now_ms + PRESENCE_S * 1000
        return self

    def _open(self) -> sqlite3.Connection:
        conn = open_db(self.db_path)
        self._conns.append(conn)
        return conn

    def crash(self) -> None:
        """The process dies: nothing uncommitted survives, the broker sends the will."""
        if not self.up:
            return
        self.up = False
        self.link.crash()
        for conn in self._conns:
            conn.close()  # an open transaction is rolled back: it was never committed
        self._conns.clear()

    # --- work ---------------------------------------------------------------------------

    def step(self) -> None:
        """Ingest what arrived (commit, then ack), publish new deltas, beat when due."""
        if not self.up:
            return
        self._in_ingest = True
        try:
            self.ingest.drain()
        finally:
            self._in_ingest = False
        self._crashed_in_sql()
        self.publisher.publish_pending()
        self._crashed_in_sql()
        if self.time.now_ms >= self._next_beat_ms:
            self.presence.beat()
            self._next_beat_ms = self.time.now_ms + PRESENCE_S * 1000

    def step_guarded(self) -> None:
        """:meth:`step`; a crash point that fires there crashes the server."""
        try:
            self.step()
        except SimCrash:
            self.crash()

    def ingest_idle(self) -> bool:
        return not self.up or self.ingest.idle.is_set()

    def _publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        self.fuse.tick("ack_publish" if self._in_ingest else "delta_publish")
        return self.link.publish(topic, payload, retain=retain)

    def _crashed_in_sql(self) -> None:
        """The ingest worker logs and survives a database error; a fired crash point is not
        one: the process is dead."""
        if self.fuse.fired is not None:
            raise SimCrash(self.fuse.fired)

    def admin(self, job: Callable[[sqlite3.Connection, int], T]) -> T:
        """Run a clerk's job (``job(conn, now_ms)``) in one write transaction."""
        if not self.up:
            raise ServerDown("the server is down")
        try:
            with write_txn(self.admin_conn):
                return job(self.admin_conn, self.clock.now_ms())
        except sqlite3.OperationalError:
            self._crashed_in_sql()
            raise

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """A read on a connection of its own (the simulator's checks), server up or not."""
        conn = self.reader()
        return conn.execute(sql, args).fetchall()

    def reader(self) -> sqlite3.Connection:
        """The checks' read-only view of the committed database."""
        conn = getattr(self, "_reader", None)
        if conn is None:
            conn = self._reader = open_db(self.db_path)
        return conn

    def close(self) -> None:
        self.crash()
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
            self._reader = None
