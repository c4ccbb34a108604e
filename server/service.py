"""The running server process: HTTP API, MQTT ingest worker and delta publisher together.

:class:`ServerService` is what ``canteen-server run`` starts and what the simulator and the
integration tests start in-process; all three use the same wiring. The HTTP side is served
by waitress (a production WSGI server, pure Python); the MQTT side by one
:class:`~shared.mqtt.MqttLink` whose callback only queues messages for the ingest worker,
and whose last will, with :class:`~server.downstream.presence.PresenceBeacon`'s heartbeats, tells
terminals whether the server is there.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import replace
from typing import Any

from flask import Flask

from server.app import create_app
from server.downstream.backup_marks import BackupMarkPublisher
from server.downstream.presence import PresenceBeacon
from server.downstream.publisher import DeltaPublisher
from server.downstream.update_offers import OfferPublisher
from server.infra.body_limit import http_server
from server.infra.db import open_db
from server.infra.run_once import Role
from server.registry import broker_users
from server.registry.broker_users import SERVER_USER, BrokerFiles, server_password
from server.registry.fleet import limits_from_config
from server.registry.fleet_watch import FleetWatch
from server.sales.ingest import IngestWorker
from server.sales.partition import Partition, ingest_split
from shared.clock import Clock, SystemClock
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import topics

log = logging.getLogger(__name__)


class ServerService:
    def __init__(
        self,
        broker_url: str,
        *,
        app: Flask | None = None,
        config: dict[str, Any] | None = None,
        clock: Clock | None = None,
        http_host: str = "127.0.0.1",
        http_port: int = 0,
        client_id: str | None = None,
        presence_s: int = 10,
        backup_mark_poll_s: float | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.app = app or create_app(config, clock=self.clock)
        self.broker_url = broker_url
        self.http_host = http_host
        self.http_port = http_port
        # unique per process: two servers sharing one id would disconnect each other in turn
        self.client_id = client_id or f"canteen-server-{os.getpid()}-{secrets.token_hex(3)}"
        self._http = None
        self._http_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.ingest: IngestWorker | None = None
        self.publisher: DeltaPublisher | None = None
        self.offers: OfferPublisher | None = None
        self.link: MqttLink | None = None
        self.presence_s = presence_s
        self.presence: PresenceBeacon | None = None
        # how soon a backup taken by another process reaches the terminals' marks
        self.backup_mark_poll_s = float(backup_mark_poll_s or self.app.config.get("BACKUP_MARK_POLL_S", 10.0))
        self.backup_marks: BackupMarkPublisher | None = None
        self.fleet_watch: FleetWatch | None = None
        # the connections this service opened for its workers, closed once they have stopped
        self._conns: list[Any] = []
        self.fleet_watch_s = float(self.app.config.get("FLEET_WATCH_S", 60))
        self.partition: Partition | None = None  # MQTT_INGEST_PARTITION: this worker's terminals
        self.not_mine = 0  # sale/reversal messages left to another partition's worker

    @property
    def base_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def start(self) -> ServerService:
        db_path = self.app.config["DATABASE"]
        # several ingest processes: each sale message to one of a share group (Mosquitto 2),
        # or every message to every worker, each keeping its own terminals (NATS 2.9 grants
        # "$share/..." and delivers nothing: refused here; docs/scaling.md)
        shared, self.partition = ingest_split(self.app.config)
        key = self.app.extensions["canteen_server_key"]
        self._http = http_server(self.app, self.http_host, self.http_port, threads=8)
        self.http_port = int(self._http.effective_port)  # type: ignore[union-attr]
        self._http_thread = threading.Thread(target=self._serve_http, name="http", daemon=True)
        self._http_thread.start()

        # PRESENCE_DELTA_VERSION: the presence says the newest delta version, read on the
        # beacon's thread through a connection of its own (off by default: a terminal older
        # than the field refuses such a presence; on once the fleet reads it, docs/scaling.md)
        say_version = bool(self.app.config.get("PRESENCE_DELTA_VERSION", False))
        self.presence = PresenceBeacon(
            key, self.clock, self.presence_s, conn=open_db(db_path) if say_version else None
        )
        address, *alternates = BrokerAddress.parse_list(self.broker_url)  # a cluster: every node
        if address.username is None:  # the locked broker's user "server", when it has one
            password = server_password(
                BrokerFiles.from_config(self.app.config).server_password_file, create=False
            )
            if password is not None:
                address = replace(address, username=SERVER_USER, password=password)
        self.link = MqttLink(
            self.client_id,
            address,
            subscriptions=[
                (shared + topics.ALL_SALES, 1),
                (topics.ALL_STATUS, 1),  # retained: never through a shared subscription
                (topics.ALL_UPDATE_REPORTS, 1),
                (shared + topics.ALL_REVERSALS, 1),
            ],
            on_message=self._on_message,
            will=self.presence.will,
            on_state=self._on_link_state,
            backoff_max_s=2.0,
            alternates=alternates,
            ca_file=str(self.app.config.get("MQTT_CA_FILE") or ""),
        )
        metrics = self.app.extensions["canteen_metrics"]

        def publish(topic: str, payload: bytes, retain: bool) -> bool:
            ok = self.link.publish(topic, payload, retain=retain)  # type: ignore[union-attr]
            if ok and topic == topics.DELTA:
                metrics.deltas.inc()
            elif ok and topic.endswith("/down/ack"):
                metrics.acks.inc()
            return ok

        self.publisher = DeltaPublisher(
            self._own_db(db_path), key, publish, self.clock, role=Role(db_path, "delta-publisher")
        ).start()
        self.ingest = IngestWorker(
            self._own_db(db_path),
            self.clock,
            publish,
            on_delta=self.publisher.poke,
            server_key=key,
            on_keys_changed=self._keys_changed,
            metrics=metrics,
        ).start()
        self.fleet_watch = FleetWatch(
            self._own_db(db_path), self.clock.now_ms, limits_from_config(self.app.config), self.fleet_watch_s
        ).start()
        self.offers = OfferPublisher(self._own_db(db_path), key, publish, self.clock).start()
        # each terminal's backup mark: how far it may prune its journal; what to resend after a restore
        self.backup_marks = BackupMarkPublisher(
            open_db(db_path), key, publish, self.clock, self.backup_mark_poll_s
        ).start()
        self.presence.start(self.link)
        self.link.start()
        # the web console's fleet page shows this process's broker link and presence heartbeat
        self.app.extensions["canteen_service"] = self
        self.link.wait_connected(10)
        return self

    def healthy(self) -> bool:
        """The ingest worker and the HTTP server still run (systemd's watchdog is pinged
        only then: a server whose ingest died is restarted, not left half-alive)."""
        return bool(
            self.ingest is not None
            and self.ingest.alive
            and self._http_thread is not None
            and self._http_thread.is_alive()
        )

    def _on_message(self, topic: str, payload: bytes) -> None:
        """MQTT callback (network thread): to the ingest worker, unless another partition's."""
        if self.partition is not None and not self.partition.handles(topic):
            self.not_mine += 1  # its owner verifies, applies and acknowledges it
            return
        self.ingest.submit(topic, payload)  # type: ignore[union-attr]

    def _on_link_state(self, up: bool) -> None:
        """The broker link came up or went down (network thread): presence and backup marks
        announce themselves again on a connect."""
        if self.presence is not None:
            self.presence.on_state(up)
        if self.backup_marks is not None:
            self.backup_marks.on_state(up)

    def _keys_changed(self) -> None:
        """A terminal completed a key rotation: the broker learns its new password."""
        conn = open_db(self.app.config["DATABASE"])
        try:
            broker_users.apply(conn, self.app.config)
        finally:
            conn.close()

    def _serve_http(self) -> None:
        try:
            self._http.run()  # type: ignore[union-attr]
        except OSError:
            # closing the listening socket under waitress's select() ends the loop this way
            if not self._stopping.is_set():
                raise

    def _own_db(self, db_path: str) -> Any:
        """A database connection for one of this service's workers, closed by :meth:`stop`."""
        conn = open_db(db_path)
        self._conns.append(conn)
        return conn

    def _close_own_dbs(self) -> None:
        """Close the workers' connections once the workers have stopped (their threads
        joined): a test, or anything else starting and stopping services in one process,
        would otherwise keep three file descriptors a connection open until the process
        ends — past 1,024, select() in the HTTP server's loop fails."""
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def stop(self) -> None:
        self._stopping.set()
        if self.fleet_watch is not None:
            self.fleet_watch.stop()
        if self.presence is not None:
            self.presence.stop()
        if self.link is not None:
            self.link.stop()
        if self.ingest is not None:
            self.ingest.stop()
        if self.publisher is not None:
            self.publisher.stop()
        if self.offers is not None:
            self.offers.stop()
        if self.backup_marks is not None:
            self.backup_marks.stop()
        if self._http is not None:
            self._http.close()  # type: ignore[union-attr]
        if self._http_thread is not None:
            self._http_thread.join(5)
            if not self._http_thread.is_alive() and self._http is not None:
                _close_http(self._http)
        self._close_own_dbs()


def _close_http(server: Any) -> None:  # noqa: ANN401  # waitress's own types
    """After its loop has ended: close the connections the HTTP server still holds (a
    client's keep-alive) and stop its task threads — closing the listening socket ends the
    loop but leaves both, a socket and eight threads per server in a process that starts
    and stops servers (the tests)."""
    for channel in list(getattr(server, "map", {}).values()):
        channel.close()
    dispatcher = getattr(server, "task_dispatcher", None)
    if dispatcher is not None:
        dispatcher.shutdown(cancel_pending=True, timeout=5)
