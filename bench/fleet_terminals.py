"""Many simulated terminals in one process, for ``scale.fleet_1000_terminals``.

Run by :mod:`bench.bench_scale` as ``python -m bench.fleet_terminals`` with a JSON job on
stdin: the broker, the terminals (each its own id, secret, canteen and sequence numbers),
the cardholders this process sells to, when to start and how long to sell. Each terminal
sells one sale every ``interval_s`` (its first at a random offset, so a lunch queue's taps
spread over the fleet), signs it with its own key, publishes it (one sale per message, QoS 1)
and keeps it in its outbox until the server's acknowledgement arrives; the acknowledgement is
verified with the terminal's key as a terminal would. Prints one JSON object: sales sold,
acknowledged (applied), each sale's tap-to-ack latency in ms.

The terminals share a few MQTT connections (a thousand paho network threads would measure
this process, not the server), so the broker sees fewer clients than a real fleet. Each
terminal publishes on one connection and subscribes, QoS 1 as a terminal does, to its own
acknowledgement topic only — not a ``+`` wildcard, which would have the broker deliver every
acknowledgement to every fleet process and each process drop the others' (work no real
terminal causes). A connection carries at most :data:`TERMINALS_PER_LINK` terminals.
``job["ack_qos"]`` (default 1): the QoS of those subscriptions — 0 is a terminal configured
with ``mqtt_light_subscriptions`` (on NATS, no JetStream consumer per terminal).
"""

from __future__ import annotations

import heapq
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import Ack, ProtocolError, Sale, SaleBatch, open_envelope, seal_hmac, topics

# NATS lets one MQTT session's QoS 1 subscriptions together hold at most 65,535 unacknowledged
# messages, each max_ack_pending (1,000: shared.nats_broker) — 65 subscriptions; a SUBSCRIBE
# over that is refused. Mosquitto has no such bound.
TERMINALS_PER_LINK = 64


class FleetLink(Protocol):
    """What the fleet needs of a connection (:class:`shared.mqtt.MqttLink`, or a test's fake)."""

    def wait_connected(self, timeout_s: float) -> bool: ...

    def publish(self, topic: str, payload: bytes) -> bool: ...

    def stop(self) -> None: ...


# (client id, its subscriptions (topic, QoS), the callback of a message) -> a started link
OpenLink = Callable[[str, list[tuple[str, int]], Callable[[str, bytes], None]], FleetLink]


def mqtt_links(broker_url: str) -> OpenLink:
    address = BrokerAddress.parse(broker_url)

    def open_link(
        client_id: str, subscriptions: list[tuple[str, int]], on_message: Callable[[str, bytes], None]
    ) -> FleetLink:
        return MqttLink(
            client_id, address, subscriptions=subscriptions, on_message=on_message, max_inflight=1000
        ).start()

    return open_link


def run(
    job: dict[str, Any], open_link: OpenLink | None = None, wait_start: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Sell as ``job`` says. ``wait_start``: called once every connection is up and subscribed,
    returns when to start (wall-clock seconds); without it, ``job["start_at"]``."""
    terminals = {t["id"]: t for t in job["terminals"]}
    secrets = {tid: bytes.fromhex(t["secret"]) for tid, t in terminals.items()}
    # each terminal's own topics, named once (as a terminal does), not per sale
    sales_topic = {tid: topics.sales(tid) for tid in terminals}
    ack_topic = {topics.ack(tid): tid for tid in terminals}
    sent: dict[tuple[str, int], float] = {}  # the outbox: (terminal, seq) -> tap time
    latencies: list[float] = []
    refused: list[str] = []
    lock = threading.Lock()
    last_ack = [0.0]  # wall clock of the last acknowledgement (the processes' common clock)

    def on_ack(topic: str, payload: bytes) -> None:
        tid = ack_topic.get(topic)
        now = time.monotonic()
        if tid is None:  # subscribed to its own terminals' topics only: the broker misrouted
            refused.append(f"ack on a topic not ours: {topic}")
            return
        try:
            env = open_envelope(payload, secret_for=lambda _s: secrets[tid], expect_type="ack")
            ack = Ack.from_body(env.body)
        except ProtocolError as exc:
            refused.append(f"bad ack: {exc.code}")
            return
        with lock:
            for r in ack.results:
                if r.terminal_id != tid:  # a terminal takes only its own sales' results
                    refused.append(f"ack for another terminal: {r.terminal_id}")
                    continue
                tapped = sent.pop((tid, r.seq), None)
                if tapped is None:
                    continue  # a second ack of the same sale (not expected: counted by the caller)
                latencies.append((now - tapped) * 1000)
                last_ack[0] = time.time()
                if r.status != "applied":
                    refused.append(r.status)

    open_link = open_link or mqtt_links(job["broker_url"])
    ack_qos = int(job.get("ack_qos", 1))
    tag = uuid.uuid4().hex[:6]
    ids = list(terminals)
    groups = [ids[i : i + TERMINALS_PER_LINK] for i in range(0, len(ids), TERMINALS_PER_LINK)]
    links = [
        open_link(f"fleet{i}-{tag}", [(topics.ack(tid), ack_qos) for tid in group], on_ack)
        for i, group in enumerate(groups)
    ]
    link_of = {tid: links[i] for i, group in enumerate(groups) for tid in group}
    if not all(link.wait_connected(20) for link in links):
        raise RuntimeError("the fleet could not connect to the broker")
    ready_at = time.time()
    start_at = wait_start() if wait_start is not None else float(job["start_at"])
    # the CPU of selling starts here: starting Python, connecting and subscribing are setup,
    # reported apart (the caller meters the other parts from ``start_at`` on, too)
    ready_cpu = time.process_time()
    rng = random.Random(job["seed"])
    interval = float(job["interval_s"])
    holders = list(job["holders"])  # each sale a different cardholder (one lunch each)
    start = time.monotonic() + max(0.0, start_at - time.time())
    end = start + float(job["duration_s"])
    due = [(start + rng.uniform(0, interval), tid) for tid in terminals]
    heapq.heapify(due)
    seqs = {tid: int(job.get("seq_start", {}).get(tid, 0)) for tid in terminals}
    sold = 0
    first_tap = 0.0
    while due:
        at, tid = heapq.heappop(due)
        if at >= end:
            continue
        wait = at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        seqs[tid] += 1
        t = terminals[tid]
        tapped = time.monotonic()
        now_ms = int(time.time() * 1000)
        first_tap = first_tap or time.time()
        card = holders[sold % len(holders)]
        sale = Sale(tid, seqs[tid], uuid.uuid4().hex, card, t["canteen"], 1200, now_ms,
                    meal_period="lunch", subsidy_fen=1200)  # fmt: skip
        payload = seal_hmac("sale_batch", tid, SaleBatch((sale,)).to_body(), secrets[tid], now_ms)
        with lock:
            sent[(tid, seqs[tid])] = tapped
        link = link_of[tid]
        while not link.publish(sales_topic[tid], payload):
            time.sleep(0.001)
        sold += 1
        heapq.heappush(due, (at + interval * rng.uniform(0.8, 1.2), tid))
    deadline = time.monotonic() + float(job["drain_s"])
    while time.monotonic() < deadline:
        with lock:
            if not sent:
                break
        time.sleep(0.05)
    for link in links:
        link.stop()
    with lock:
        return {
            "sold": sold,
            "first_tap": first_tap,
            "last_ack": last_ack[0],
            "acked": len(latencies),
            "unacked": len(sent),
            "refused": refused[:20],
            "refused_count": len(refused),
            "latencies_ms": [round(x, 1) for x in latencies],
            "seqs": seqs,
            "cpu_s": time.process_time() - ready_cpu,  # sign, send, listen, verify: from ready on
            "setup_cpu_s": ready_cpu,  # start, import, connect, subscribe
            "late_s": max(0.0, ready_at - start_at),  # ready after the start: setup in the window
        }


def main() -> int:
    """The job is stdin's first line. Once connected and subscribed the process says ``ready``
    on stdout and reads when to start (wall-clock seconds) from stdin's next line: the caller
    starts every process at once, after the slowest is ready. Then the outcome on stdout."""
    job = json.loads(sys.stdin.readline())

    def wait_start() -> float:
        print("ready", flush=True)
        return float(sys.stdin.readline())

    print(json.dumps(run(job, wait_start=wait_start)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
