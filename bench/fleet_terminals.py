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
this process, not the server), so the broker sees fewer clients than a real fleet.
"""

from __future__ import annotations

import heapq
import json
import random
import sys
import threading
import time
import uuid
from typing import Any

from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import Ack, ProtocolError, Sale, SaleBatch, open_envelope, seal_hmac, topics

CONNECTIONS = 4


def run(job: dict[str, Any]) -> dict[str, Any]:
    terminals = {t["id"]: t for t in job["terminals"]}
    secrets = {tid: bytes.fromhex(t["secret"]) for tid, t in terminals.items()}
    sent: dict[tuple[str, int], float] = {}  # the outbox: (terminal, seq) -> tap time
    latencies: list[float] = []
    refused: list[str] = []
    lock = threading.Lock()
    last_ack = [0.0]  # wall clock of the last acknowledgement (the processes' common clock)

    def on_ack(topic: str, payload: bytes) -> None:
        tid = topics.terminal_of(topic)
        if tid not in secrets:
            return  # another process's terminal
        now = time.monotonic()
        try:
            env = open_envelope(payload, secret_for=lambda _s: secrets[tid], expect_type="ack")
            ack = Ack.from_body(env.body)
        except ProtocolError as exc:
            refused.append(f"bad ack: {exc.code}")
            return
        with lock:
            for r in ack.results:
                tapped = sent.pop((r.terminal_id, r.seq), None)
                if tapped is None:
                    continue  # a second ack of the same sale (not expected: counted by the caller)
                latencies.append((now - tapped) * 1000)
                last_ack[0] = time.time()
                if r.status != "applied":
                    refused.append(r.status)

    address = BrokerAddress.parse(job["broker_url"])
    tag = uuid.uuid4().hex[:6]
    listener = MqttLink(
        f"fleet-acks-{tag}", address, subscriptions=[(f"{topics.PREFIX}/t/+/down/ack", 1)],
        on_message=on_ack, max_inflight=1000,
    ).start()  # fmt: skip
    links = [MqttLink(f"fleet-pub{i}-{tag}", address, max_inflight=1000).start() for i in range(CONNECTIONS)]
    if not (listener.wait_connected(20) and all(p.wait_connected(20) for p in links)):
        raise RuntimeError("the fleet could not connect to the broker")
    rng = random.Random(job["seed"])
    interval = float(job["interval_s"])
    holders = list(job["holders"])  # each sale a different cardholder (one lunch each)
    start = time.monotonic() + max(0.0, job["start_at"] - time.time())
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
        link = links[sold % CONNECTIONS]
        while not link.publish(topics.sales(tid), payload):
            time.sleep(0.001)
        sold += 1
        heapq.heappush(due, (at + interval * rng.uniform(0.8, 1.2), tid))
    deadline = time.monotonic() + float(job["drain_s"])
    while time.monotonic() < deadline:
        with lock:
            if not sent:
                break
        time.sleep(0.05)
    for link in [*links, listener]:
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
            "cpu_s": time.process_time(),  # this process's whole CPU: connect, sign, send, listen
        }


def main() -> int:
    job = json.loads(sys.stdin.read())
    print(json.dumps(run(job)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
