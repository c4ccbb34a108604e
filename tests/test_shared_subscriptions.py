"""What each broker does with MQTT shared subscriptions (``$share/<group>/<filter>``), the way
several ingest workers would split the terminals' sales (issue 16; docs/scaling.md). The
project's clients speak MQTT 3.1.1. Absence is checked against a later message from the
same publisher on a plain topic of the same link (MQTT keeps one publisher's order)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.broker import MosquittoBroker
from shared.mqtt import BrokerAddress, MqttLink
from shared.nats_broker import NatsBroker
from shared.protocol import topics
from simulator.waiting import wait_until

SHARED = f"$share/ingest/{topics.ALL_SALES}"
PROBE = f"{topics.PREFIX}/down/probe"


def _workers(url: str, n: int) -> tuple[list[MqttLink], list[list[str]]]:
    inboxes: list[list[str]] = [[] for _ in range(n)]
    links = []
    for i in range(n):
        on: Callable[[str, bytes], None] = lambda t, p, box=inboxes[i]: box.append(t)  # noqa: E731
        link = MqttLink(
            f"ingest-{i}", BrokerAddress.parse(url), subscriptions=[(SHARED, 1), (PROBE, 1)], on_message=on
        )
        links.append(link.start())
    return links, inboxes


def _publish_sales_then_probe(url: str, count: int) -> MqttLink:
    """The publisher, still connected (stopped by the caller once the probe arrived)."""
    pub = MqttLink("pub", BrokerAddress.parse(url)).start()
    assert pub.wait_connected(10)
    for i in range(count):
        assert pub.publish(topics.sales(f"T{i % 7}"), b"sale")
    assert pub.publish(PROBE, b"end")
    return pub


@pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary")
def test_mosquitto_splits_a_shared_subscription_between_3_1_1_workers() -> None:
    broker = MosquittoBroker().start()
    links, inboxes = _workers(broker.url, 2)
    try:
        assert all(link.wait_connected(10) for link in links)
        pub = _publish_sales_then_probe(broker.url, 100)
        assert wait_until(lambda: all(PROBE in box for box in inboxes), 30), [len(b) for b in inboxes]
        pub.stop()
        sales = [sum(t != PROBE for t in box) for box in inboxes]
        assert sum(sales) == 100  # each sale to exactly one worker
        assert min(sales) > 0  # and both work
    finally:
        for link in links:
            link.stop()
        broker.stop()


@pytest.mark.skipif(not NatsBroker.available(), reason="needs nats-server (Debian nats-server)")
def test_nats_grants_a_shared_subscription_but_delivers_nothing_through_it() -> None:
    broker = NatsBroker().start()
    links, inboxes = _workers(broker.url, 1)
    try:
        assert links[0].wait_connected(20) and links[0].refusals == 0  # SUBACK granted
        pub = _publish_sales_then_probe(broker.url, 10)
        assert wait_until(lambda: PROBE in inboxes[0], 30)
        pub.stop()
        assert inboxes[0] == [PROBE]  # "$share/..." taken as a literal topic: the worker is deaf
    finally:
        links[0].stop()
        broker.stop()
