"""A terminal connected to the broker is not necessarily connected to the server: it uses
its online limits only while the server says it is there and answers its sales."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from shared.clock import FakeClock, ms_from_china
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import ServerStatus, ServerVerifier, open_envelope, topics
from simulator.harness.cluster import Cluster, TerminalHandle
from simulator.harness.world import World
from simulator.waiting import wait_until
from terminal.agent import OFFLINE_BANNER
from terminal.authorize import TapRequest

pytestmark = pytest.mark.broker


@contextlib.contextmanager
def _cluster(broker, tmp_path, **terminal) -> Iterator[tuple[Cluster, World, TerminalHandle]]:  # noqa: ANN001
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        world = cluster.demo_world(6)
        t = cluster.add_terminal("C01", **terminal)
        assert cluster.wait_synced()
        yield cluster, world, t


class PresenceWatcher:
    """A bare MQTT client that collects the server's presence messages, verified."""

    def __init__(self, broker_url: str, cluster: Cluster) -> None:
        self.states: list[str] = []
        verifier = ServerVerifier(cluster.server.app.extensions["canteen_server_key"].public_hex)  # type: ignore[union-attr]

        def on_message(topic: str, payload: bytes) -> None:
            env = open_envelope(payload, server=verifier, expect_type="server_status")
            self.states.append(ServerStatus.from_body(env.body).state)

        self.link = MqttLink(
            f"presence-{id(self)}",
            BrokerAddress.parse(broker_url),
            subscriptions=[(topics.SERVER, 1)],
            on_message=on_message,
        ).start()
        assert self.link.wait_connected(10)

    def publish(self, payload: bytes) -> None:
        assert self.link.publish(topics.SERVER, payload, retain=True)


def test_the_server_announces_itself_and_its_will_says_offline_when_its_connection_dies(
    broker, tmp_path
) -> None:  # noqa: ANN001
    with _cluster(broker, tmp_path) as (cluster, _world, _t):
        watcher = PresenceWatcher(broker.url, cluster)
        try:
            assert wait_until(lambda: watcher.states[-1:] == ["online"], 30)  # the retained one
            cluster.server.link.drop_connection()  # type: ignore[union-attr]  # no DISCONNECT: the broker sends the will
            assert wait_until(lambda: "offline" in watcher.states, 30)
            # the server reconnects by itself and says so
            assert wait_until(lambda: watcher.states[-1] == "online", 30)
        finally:
            watcher.link.stop()


def test_a_terminal_whose_server_went_offline_sells_on_its_offline_limits(broker, tmp_path) -> None:  # noqa: ANN001
    with _cluster(broker, tmp_path) as (cluster, world, t):
        assert t.terminal.sync.in_sync
        watcher = PresenceWatcher(broker.url, cluster)
        try:
            # what the broker publishes when the server dies: its will, signed by the server
            watcher.publish(cluster.server.presence.message("offline"))  # type: ignore[union-attr]
            assert wait_until(lambda: not t.terminal.sync.in_sync, 30)
            assert t.terminal.sync.online  # the broker link itself is fine
            assert wait_until(lambda: OFFLINE_BANNER in t.terminal.display.last.lines, 30)  # type: ignore[union-attr]
            _, sale = t.terminal.tap(TapRequest(world.diners[0].card_id))
            assert sale is not None and sale.offline  # decided on the offline limits, and marked so
            assert t.terminal.sync.offline_since_ms is not None
            # the server's next heartbeat brings the terminal back
            watcher.publish(cluster.server.presence.message("online"))  # type: ignore[union-attr]
            # in_sync flips first; the sync thread then clears offline_since_ms
            assert wait_until(
                lambda: t.terminal.sync.in_sync and t.terminal.sync.offline_since_ms is None, 30
            )
            _, sale = t.terminal.tap(TapRequest(world.diners[1].card_id))
            assert sale is not None and not sale.offline
        finally:
            watcher.link.stop()


def test_a_stale_retained_online_expires_when_the_heartbeats_stop(broker, tmp_path) -> None:  # noqa: ANN001
    with _cluster(broker, tmp_path, server_silence_s=1.5) as (cluster, _world, t):
        cluster.server.presence.stop()  # type: ignore[union-attr]  # no more heartbeats ("offline" on a clean stop)
        watcher = PresenceWatcher(broker.url, cluster)
        try:
            assert wait_until(lambda: not t.terminal.sync.in_sync, 30)
            # a broker restarted with persistence still holds the dead server's "online"
            watcher.publish(cluster.server.presence.message("online"))  # type: ignore[union-attr]
            assert wait_until(lambda: t.terminal.sync.in_sync, 30)
            assert wait_until(lambda: not t.terminal.sync.in_sync, 30)  # nothing follows it: silence
            assert not t.terminal.sync.server_present
        finally:
            watcher.link.stop()


def test_a_half_open_link_falls_back_to_the_offline_limits_once_acks_are_overdue(broker, tmp_path) -> None:  # noqa: ANN001
    with _cluster(broker, tmp_path, ack_timeout_s=1.0) as (cluster, world, t):
        t.mqtt_proxy.oneway()  # our bytes reach the server; nothing comes back
        _, first = t.terminal.tap(TapRequest(world.diners[0].card_id))
        assert first is not None and not first.offline  # nothing is known to be wrong yet
        assert wait_until(lambda: t.terminal.sync.ack_overdue, 30)
        assert not t.terminal.sync.in_sync and t.terminal.sync.online  # TCP still looks fine
        _, second = t.terminal.tap(TapRequest(world.diners[1].card_id))
        assert second is not None and second.offline
        t.heal()
        assert cluster.drain(30)
        assert wait_until(lambda: t.terminal.sync.in_sync, 20)
        assert cluster.audit().mismatch_details == []
