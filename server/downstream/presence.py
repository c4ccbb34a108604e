"""The server's presence on the broker: how terminals tell a live server from a dead one.

A terminal's MQTT link can be up while the server behind the broker is dead (killed,
restarting, stuck); a terminal that took "link up" for "server up" would keep selling on
its online limits against a cache nobody updates. So the server says it is there:

* ``online`` (retained, Ed25519-signed) when it connects and every ``heartbeat_s`` after;
* ``offline`` as its MQTT last will — the broker publishes it the moment the server's
  connection dies — and explicitly on a clean stop.

The terminal (``terminal.sync``) treats the server as present only while ``online``
messages keep coming (a retained one can outlive its server if the broker restarted with
persistence), and uses its offline limits otherwise.

Each message carries this run's random ``boot`` id and a rising ``seq``, and is signed with
its send time: a terminal ignores an ``online`` older than its ``server_silence_s`` or with a
sequence below the last one it saw from the same boot, so a captured ``online`` replayed
after the server died does not keep it on its online limits.

Given a database connection of its own (``PRESENCE_DELTA_VERSION``, ``server.service``), each
``online`` also carries the newest delta version, read once per heartbeat: a terminal that
lost the last delta (QoS 0, ``mqtt_light_deltas``) sees no gap until the next delta,
but sees this version ahead of its own and catches up (``terminal.sync_downstream``). Several
server processes each read it on their own heartbeat, so a presence may say a version a
heartbeat old: a terminal acts only on one ahead of its own. Without the connection the
field is left out: a terminal older than it refuses a presence that has it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import sqlite3
import threading

from server.downstream.deltas import current_version
from shared.clock import Clock
from shared.mqtt import MqttLink
from shared.protocol import ServerKey, ServerStatus, seal_server, topics

log = logging.getLogger(__name__)


class PresenceBeacon:
    """``conn``: the beacon's own database connection, to say the newest delta version
    (closed by :meth:`stop`); None: the presence says none."""

    def __init__(
        self, key: ServerKey, clock: Clock, heartbeat_s: int = 10, conn: sqlite3.Connection | None = None
    ) -> None:
        self._key = key
        self._clock = clock
        self.heartbeat_s = heartbeat_s
        self._conn = conn
        self._conn_lock = threading.Lock()  # beat() is public: one query on the connection at a time
        # the version read at the last heartbeat: a connect's announcement (network thread)
        # says it without a query of its own; None until read
        self.delta_version: int | None = None
        self.boot = secrets.token_hex(8)
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self._link: MqttLink | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)

    def message(self, state: str) -> bytes:
        with self._seq_lock:
            seq = next(self._seq)
        version = self.delta_version if state == "online" else None
        body = ServerStatus(state, self.heartbeat_s, self.boot, seq, version).to_body()
        return seal_server("server_status", body, self._key, self._clock.now_ms())

    def will(self) -> tuple[str, bytes, bool]:
        """The last will, set before every connect: the broker says "offline" for us."""
        return topics.SERVER, self.message("offline"), True

    def start(self, link: MqttLink) -> PresenceBeacon:
        self._read_version()  # for the first connect's announcement
        self.attach(link)
        self._thread.start()
        return self

    def attach(self, link: MqttLink) -> PresenceBeacon:
        """Announce on ``link`` from now on, without the heartbeat thread (whoever attaches
        calls :meth:`beat` every ``heartbeat_s``: the deterministic simulator)."""
        self._link = link
        return self

    def beat(self) -> None:
        """One heartbeat: "online", if connected, with the newest delta version read now."""
        if self._link is not None and self._link.connected:
            self._read_version()
            self._announce("online")

    def _read_version(self) -> None:
        if self._conn is None:
            return
        try:
            with self._conn_lock:
                self.delta_version = current_version(self._conn)
        except sqlite3.Error:  # said without the version this time, the older one not repeated
            self.delta_version = None
            log.exception("presence: could not read the delta version")

    def on_state(self, up: bool) -> None:
        """The MQTT link came up or went down: announce ourselves at once on a connect."""
        if up:
            self._announce("online")

    def stop(self) -> None:
        """A clean shutdown says so (the will covers the unclean one)."""
        self._stop.set()
        self._thread.join(5)
        if self._link is not None and self._link.connected:
            self._announce("offline")
        if self._conn is not None:
            self._conn.close()

    def _announce(self, state: str) -> None:
        if self._link is not None and not self._link.publish(topics.SERVER, self.message(state), retain=True):
            log.warning("presence: could not publish %s", state)

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.beat()
