"""``mqtt_light_subscriptions``: a terminal subscribes at QoS 0 to the topics whose loss the
protocol repairs by itself, and only to those (the default stays QoS 1 everywhere); with
``mqtt_light_deltas`` the deltas too. Through a
real broker (the tests' and nats-server) and a real server, an acknowledgement lost on a live
connection — what QoS 0 allows — is repaired by the terminal's own resend: the server answers
``duplicate`` with the first result, the sale is applied once and the outbox ends empty,
without a reconnect. A lost last delta (a card block) is repaired through the server's
presence saying its newest delta version (``PRESENCE_DELTA_VERSION``): the terminal catches
up within a heartbeat or two; a server that says none leaves it as before, behind."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.downstream.deltas import current_version
from shared.clock import FakeClock, ms_from_china
from shared.mqtt import BrokerAddress, MqttLink
from shared.nats_broker import NatsBroker
from shared.protocol import topics
from shared.protocol.codec import parse_json
from simulator.harness.cluster import Cluster, TerminalHandle
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from terminal import sync_downstream
from terminal.agent import Terminal
from terminal.authorize import TapRequest
from terminal.config import TerminalConfig, check_settings
from terminal.sync import SyncAgent
from terminal.sync_link import Transport
from tests.terminal_support import offline_config

START = "2026-01-06T12:00"


def _subscriptions(config: TerminalConfig) -> dict[str, int]:
    agent = SyncAgent(config, FakeClock(0))  # the link is made, not started
    try:
        return dict(agent.link.subscriptions)  # type: ignore[attr-defined]
    finally:
        agent.store.close()


def test_by_default_every_subscription_is_qos_1(tmp_path: Path) -> None:
    subs = _subscriptions(offline_config(tmp_path))
    assert len(subs) == 7 and set(subs.values()) == {1}


def test_light_subscriptions_are_qos_0_only_where_the_protocol_repairs_a_loss(tmp_path: Path) -> None:
    light = _subscriptions(offline_config(tmp_path, mqtt_light_subscriptions=True))
    assert light.keys() == _subscriptions(offline_config(tmp_path)).keys()  # the same topics
    assert {t for t, q in light.items() if q == 0} == {
        topics.ack("T1"),  # resent after ack_timeout_s, answered `duplicate`
        topics.SERVER,  # repeated; an unheard server expires
        topics.status("T1"),  # our own, read back: the next heartbeat
        topics.update_offer("T1"),  # republished by the server
        topics.rekey("T1"),  # offered again, and asked over HTTP
    }
    # not repaired without the broker: a restore's mark is sent once
    assert light[topics.backup("T1")] == 1
    # a lost last delta is repaired only where the server's presence says the newest version:
    # QoS 0 for deltas is a setting of its own, so light mode alone is never weaker than before
    assert light[topics.DELTA] == 1
    deltas = _subscriptions(offline_config(tmp_path, mqtt_light_subscriptions=True, mqtt_light_deltas=True))
    light_qos0 = {t for t, q in light.items() if q == 0}
    assert {t for t, q in deltas.items() if q == 0} == light_qos0 | {topics.DELTA}


def test_the_setting_is_true_or_false() -> None:
    base = {"terminal_id": "T1", "canteen_id": "C1", "secret_hex": "00", "server_public_key": "00"}
    base |= {"broker_url": "mqtt://h", "server_url": "http://h"}
    assert check_settings(base | {"mqtt_light_subscriptions": True}) == ""
    assert check_settings(base | {"mqtt_light_subscriptions": False}) == ""
    assert "true or false" in check_settings(base | {"mqtt_light_subscriptions": "yes"})
    assert "true or false" in check_settings(base | {"mqtt_light_subscriptions": 1})
    assert "greater than 0" in check_settings(base | {"batch_size": 0})  # the numbers still checked


def _light_terminal(
    cluster: Cluster, drop_acks: int, drop_deltas: Callable[[], bool] = lambda: False
) -> tuple[TerminalHandle, list[MqttLink], list[bytes]]:
    """A terminal with light subscriptions whose link drops its first ``drop_acks``
    acknowledgements as they arrive (a QoS 0 message the broker did not deliver), the
    connection staying up, and every delta while ``drop_deltas()``. Its links, and what
    was dropped."""
    config, mqtt_proxy, http_proxy = cluster.terminal_config(
        "C01",
        f"{cluster.terminal_prefix}-L",
        ack_timeout_s=1.0,
        mqtt_light_subscriptions=True,
        mqtt_light_deltas=True,
    )
    links: list[MqttLink] = []
    dropped: list[bytes] = []

    def link(
        client_id: str,
        subscriptions: list[tuple[str, int]],
        *,
        on_message: Callable[[str, bytes], None],
        on_state: Callable[[bool], None],
        will: Callable[[], tuple[str, bytes, bool]],
    ) -> MqttLink:
        def deliver(topic: str, payload: bytes) -> None:
            if topic == topics.ack(client_id) and len(dropped) < drop_acks:
                dropped.append(payload)
                return
            if topic == topics.DELTA and drop_deltas():
                dropped.append(payload)
                return
            on_message(topic, payload)

        made = MqttLink(
            client_id,
            BrokerAddress.parse(config.broker_url),
            subscriptions=subscriptions,
            on_message=deliver,
            on_state=on_state,
            will=will,
        )
        links.append(made)
        return made

    terminal = Terminal(config, cluster.clock, transport=Transport(link=link)).start()
    handle = TerminalHandle(terminal, config, mqtt_proxy, http_proxy)
    cluster.terminals.append(handle)  # stopped and audited with the others
    return handle, links, dropped


@pytest.fixture(params=["session", "nats"])
def any_broker(request, broker) -> Iterator[object]:  # noqa: ANN001
    """The tests' broker, and nats-server (where QoS 0 is what the setting is for)."""
    if request.param == "session":
        yield broker
        return
    if not NatsBroker.available():
        pytest.skip("nats-server not installed")
    nats = NatsBroker().start()  # open (tests only): the harness's terminals enrol over HTTP
    yield nats
    nats.stop()


@pytest.mark.broker
def test_a_lost_ack_is_repaired_by_the_resend_and_the_sale_applied_once(any_broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china(START))
    prefix = tmp_path.name[-12:]
    with Cluster(tmp_path, broker=any_broker, clock=clock, terminal_prefix=prefix) as cluster:
        conn = cluster.db()
        world = demo_world(conn, clock.now_ms(), diners=6)
        t, links, dropped = _light_terminal(cluster, drop_acks=1)
        assert (topics.ack(t.id), 0) in links[0].subscriptions
        assert cluster.wait_synced()
        assert t.terminal.tap(TapRequest(world.diners[0].card_id))[0].approved
        assert wait_until(lambda: len(dropped) == 1, 30)  # the server applied it and answered
        assert cluster.drain(15)  # ... and the terminal's resend was answered `duplicate`
        assert t.terminal.sync.stats.resends >= 1
        assert len(links) == 1 and links[0].connects == 1  # repaired on the same connection
        rows = conn.execute("SELECT status FROM sales WHERE terminal_id = ?", (t.id,)).fetchall()
        assert [r[0] for r in rows] == ["applied"]
        conn.close()
        audit = cluster.audit()
        assert audit.mismatch_details == [] and audit.violations == []
        assert audit.approved == audit.applied == 1 and audit.pending == 0
        assert audit.duplicates_ignored >= 1
        card = t.terminal.store.card_state(world.diners[0].card_id)
        assert card is not None and card.unconfirmed_fen == 0  # settled by the duplicate's result


def _blocked(t: TerminalHandle, card_id: str) -> bool:
    state = t.terminal.store.card_state(card_id)
    assert state is not None
    return state.blocked or state.card_status != "active"


def _senders(payloads: list[bytes]) -> list[tuple[str, int]]:
    """(sender, delta version) of each sealed delta message."""
    return [(m["sender"], int(m["body"]["version"])) for m in map(parse_json, payloads)]


def _published(cluster: Cluster) -> int:
    assert cluster.server is not None and cluster.server.publisher is not None
    return cluster.server.publisher.published


def _head(cluster: Cluster) -> int:
    conn = cluster.db()
    try:
        return current_version(conn)
    finally:
        conn.close()


@pytest.mark.broker
@pytest.mark.parametrize("says_version", [True, False])
def test_a_lost_last_delta_is_repaired_through_the_presences_version(  # noqa: ANN001
    any_broker, tmp_path, monkeypatch, says_version
) -> None:
    """A card reported lost, its delta (the last one) lost on the light terminal's live
    connection: with the server's presence saying its newest version, the terminal catches
    up within two heartbeats and refuses the card; with a server that says none (the
    default) nothing reveals the loss, as before — why light mode wants the setting."""
    monkeypatch.setattr(sync_downstream, "HEAD_GRACE_S", 0.3)  # the heartbeats come in 0.5 s here
    clock = FakeClock(ms_from_china(START))
    prefix = tmp_path.name[-12:]
    config = {"PRESENCE_DELTA_VERSION": says_version}
    with Cluster(
        tmp_path, broker=any_broker, clock=clock, terminal_prefix=prefix, server_config=config
    ) as cluster:
        world = cluster.demo_world(6)
        dropping = [False]
        t, links, dropped = _light_terminal(cluster, drop_acks=0, drop_deltas=lambda: dropping[0])
        assert (topics.DELTA, 0) in links[0].subscriptions
        assert cluster.wait_synced()
        card = world.diners[0].card_id
        before = _head(cluster)
        sync = t.terminal.sync
        assert sync.downstream.version == before

        dropping[0] = True
        cluster.http("POST", f"/api/v1/cards/{card}/lost")
        head = _head(cluster)
        assert head > before
        lost = set(range(before + 1, head + 1))
        # published, and lost on the way (counted by version: the tests' broker is shared, and
        # a retained delta of another test's server can arrive here too)
        assert wait_until(lambda: lost <= {v for _, v in _senders(dropped)}, 30), (
            f"deltas {sorted(lost)} not all seen lost: dropped {_senders(dropped)}; "
            f"link connects {links[0].connects}, publisher at {_published(cluster)}"
        )
        dropping[0] = False
        assert sync.downstream.version == before and not sync.downstream.need_catchup
        assert not _blocked(t, card)  # the block not known: it would still sell
        beacon = cluster.server.presence  # type: ignore[union-attr]
        for _ in range(4):  # the heartbeats (the beacon's own thread beats every 10 s)
            beacon.beat()
            time.sleep(0.5)
        if says_version:
            assert wait_until(lambda: t.terminal.store.delta_version == head, 30)
            assert sync.downstream.head_catchups == 1 and sync.stats.catchups >= 1
            assert len(links) == 1 and links[0].connects == 1  # on the same connection
            assert _blocked(t, card)
            decision, _ = t.terminal.tap(TapRequest(card))
            assert (decision.approved, decision.reason) == (False, "card_blocked")
        else:
            assert t.terminal.store.delta_version == before  # nothing said it: still behind
            assert not _blocked(t, card)
            assert sync.downstream.head_catchups == 0
