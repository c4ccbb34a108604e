"""The fleet of ``scale.fleet_1000_terminals`` (bench/fleet_terminals.py) against a fake broker:
each connection subscribes to its own terminals' acknowledgement topics only (so no process
receives, and drops, another's), every sale is signed with its terminal's own key and
acknowledged once, and an acknowledgement that is not the terminal's own is counted, not
taken."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.fleet_terminals import TERMINALS_PER_LINK, FleetLink, run
from shared.protocol import Ack, SaleBatch, SaleResult, open_envelope, seal_hmac, topics


def _matches(topic_filter: str, topic: str) -> bool:
    f, t = topic_filter.split("/"), topic.split("/")
    if f and f[-1] == "#":
        return t[: len(f) - 1] == [x if x != "+" else y for x, y in zip(f[:-1], t, strict=False)]
    return len(f) == len(t) and all(x in ("+", y) for x, y in zip(f, t, strict=True))


class FakeBroker:
    """Routes by MQTT topic filter; answers every sale at once with an ack signed by the
    key the sale was signed with (the server's check of that key is the sale's opening).
    ``ack_topic_of`` picks where the ack goes (a misrouting broker in one test)."""

    def __init__(self, secrets: dict[str, bytes], ack_topic_of: Callable[[str], str] = topics.ack) -> None:
        self.secrets = secrets
        self.ack_topic_of = ack_topic_of
        self.links: list[FakeLink] = []
        self.sales: list[str] = []

    def open_link(
        self, client_id: str, subscriptions: list[tuple[str, int]], on_message: Callable[[str, bytes], None]
    ) -> FleetLink:
        link = FakeLink(self, client_id, subscriptions, on_message)
        self.links.append(link)
        return link

    def deliver(self, topic: str, payload: bytes) -> None:
        for link in self.links:
            if any(_matches(f, topic) for f, _ in link.subscriptions):
                link.on_message(topic, payload)

    def publish(self, topic: str, payload: bytes) -> None:
        tid = topics.terminal_of(topic)
        assert tid is not None and topic == topics.sales(tid)
        env = open_envelope(payload, secret_for=self.secrets.get, expect_type="sale_batch")
        assert env.sender == tid
        (sale,) = SaleBatch.from_body(env.body, tid).sales
        self.sales.append(tid)
        ack = Ack(env.msg_id, (SaleResult(tid, sale.seq, sale.uuid, "applied"),))
        now = int(time.time() * 1000)
        self.deliver(
            self.ack_topic_of(tid), seal_hmac("ack", "server", ack.to_body(), self.secrets[tid], now)
        )


class FakeLink:
    def __init__(
        self,
        broker: FakeBroker,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        on_message: Callable[[str, bytes], None],
    ) -> None:
        self.broker, self.client_id = broker, client_id
        self.subscriptions, self.on_message = subscriptions, on_message
        self.stopped = self.waited = False

    def wait_connected(self, timeout_s: float) -> bool:
        self.waited = True
        return True

    def publish(self, topic: str, payload: bytes) -> bool:
        self.broker.publish(topic, payload)
        return True

    def stop(self) -> None:
        self.stopped = True


def _terminal(n: int) -> dict[str, str]:
    return {"id": f"F{n:04d}", "secret": f"{n:02x}" * 32, "canteen": "C000"}


def _job(terminals: list[dict[str, str]]) -> dict:
    return {
        "terminals": terminals,
        "holders": [f"K{h:06d}" for h in range(1000)],
        "interval_s": 0.02,
        "duration_s": 0.1,
        "start_at": time.time(),
        "drain_s": 2.0,
        "seed": 1,
    }


def test_each_connection_subscribes_to_its_own_terminals_acks_only() -> None:
    fleet = [_terminal(n) for n in range(2 * TERMINALS_PER_LINK + 5)]
    mine, theirs = fleet[0::2], fleet[1::2]  # two fleet processes, as bench_scale splits them
    broker = FakeBroker({t["id"]: bytes.fromhex(t["secret"]) for t in fleet})
    out = run(_job(mine), broker.open_link)
    subscribed = [f for link in broker.links for f in link.subscriptions]
    assert sorted(subscribed) == sorted((topics.ack(t["id"]), 1) for t in mine)
    assert all(len(link.subscriptions) <= TERMINALS_PER_LINK for link in broker.links)
    assert all(link.stopped for link in broker.links)
    # none of the other process's acknowledgements would reach this one
    assert not any(_matches(f, topics.ack(t["id"])) for f, _ in subscribed for t in theirs)
    assert out["sold"] >= len(mine) and set(broker.sales) == {t["id"] for t in mine}
    assert out["acked"] == out["sold"] == len(broker.sales) and out["unacked"] == 0
    assert out["refused_count"] == 0, out["refused"]


def test_an_ack_not_the_terminals_own_is_refused_not_taken() -> None:
    fleet = [_terminal(n) for n in range(4)]
    # a broker that hands each ack to the next terminal (its topic, not the sale's terminal)
    ids = [t["id"] for t in fleet]
    broker = FakeBroker(
        {t["id"]: bytes.fromhex(t["secret"]) for t in fleet},
        ack_topic_of=lambda tid: topics.ack(ids[(ids.index(tid) + 1) % len(ids)]),
    )
    job = _job(fleet) | {"drain_s": 0.2}
    out = run(job, broker.open_link)
    assert out["sold"] > 0 and out["acked"] == 0 and out["unacked"] == out["sold"]
    # signed with the sale's terminal's key, not the receiving one's: the signature fails
    assert out["refused_count"] == out["sold"]
    assert all(r.startswith("bad ack") for r in out["refused"])


def test_the_start_is_asked_for_once_every_connection_is_up() -> None:
    fleet = [_terminal(n) for n in range(TERMINALS_PER_LINK + 1)]
    broker = FakeBroker({t["id"]: bytes.fromhex(t["secret"]) for t in fleet})
    asked: list[bool] = []

    def wait_start() -> float:
        asked.append(len(broker.links) == 2 and all(link.waited for link in broker.links))
        return time.time()

    job = _job(fleet)
    del job["start_at"]  # the start is the caller's answer, not the job's
    out = run(job, broker.open_link, wait_start)
    assert asked == [True]
    assert out["acked"] == out["sold"] > 0 and out["late_s"] == 0.0


def test_the_acks_subscription_qos_is_the_jobs() -> None:
    fleet = [_terminal(n) for n in range(3)]
    broker = FakeBroker({t["id"]: bytes.fromhex(t["secret"]) for t in fleet})
    out = run(_job(fleet) | {"ack_qos": 0}, broker.open_link)  # a fleet of light terminals
    subscribed = [s for link in broker.links for s in link.subscriptions]
    assert sorted(subscribed) == sorted((topics.ack(t["id"]), 0) for t in fleet)
    assert out["acked"] == out["sold"] > 0
