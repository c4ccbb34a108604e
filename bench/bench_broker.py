"""``broker.raw_qos1_msgs_per_s``: the ceiling the sync path is compared with.

paho publishing QoS 1 messages (300 bytes, the size of a small sale batch) through the
broker to one paho subscriber; time from the first publish to the last delivery.
"""

from __future__ import annotations

import threading
import time

from bench.run import Context, Result
from shared.mqtt import BrokerAddress, MqttLink


def broker_raw_qos1(ctx: Context, n: int = 20_000, size: int = 300) -> list[Result]:
    address = BrokerAddress.parse(ctx.broker.url)
    got = 0
    done = threading.Event()

    def on_message(topic: str, payload: bytes) -> None:
        nonlocal got
        got += 1
        if got == n:
            done.set()

    sub = MqttLink("bench-sub", address, subscriptions=[("bench/raw", 1)], on_message=on_message).start()
    pub = MqttLink("bench-pub", address, max_inflight=1000).start()
    assert sub.wait_connected(10) and pub.wait_connected(10)
    payload = b"x" * size
    t0 = time.perf_counter()
    for _ in range(n):
        while not pub.publish("bench/raw", payload):
            time.sleep(0.001)
    done.wait(120)
    elapsed = time.perf_counter() - t0
    sub.stop()
    pub.stop()
    return [
        Result(
            "broker.raw_qos1_msgs_per_s",
            round(got / elapsed),
            "msg/s",
            {"broker": ctx.broker.kind, "messages": n, "delivered": got, "bytes": size},
        )
    ]


BENCHMARKS = [broker_raw_qos1]
