"""The simulated broker and the links to it: MQTT's behaviour, with faults from the seed.

:class:`SimLink` has the interface the real code uses of :class:`shared.mqtt.MqttLink`
(``start``, ``stop``, ``connected``, ``publish(topic, payload, retain=…)``, a last will
taken at each connect, ``on_message`` and ``on_state`` callbacks), so the terminal's sync
agent and the server's ingest worker, delta publisher and presence beacon run unchanged on
it (:class:`terminal.sync_link.Transport`). :class:`SimBroker` routes what is published to the
subscribed links (``+`` and ``#`` wildcards), keeps retained messages, publishes a link's
will when its connection dies, and delivers each message at a time drawn from the link's
current :class:`LinkFaults`:

* **loss** on the way up or down, **duplication** (a QoS 1 redelivery), **delay** (a base
  latency with jitter, sometimes a long stall) — and so **reordering**, counted when a
  link receives a message sent before one it already got;
* **partitions**: a partitioned link's bytes go nowhere; the broker and the client notice
  only when the keepalive runs out (drawn per partition, so some links stay half-open for
  a while), then the will goes out and the client reconnects after the heal, with backoff;
* **broker restart**: every queued message is dropped, every connection reset (no wills:
  the broker itself went), retained messages kept (persistence); clients reconnect once
  it is back.

Every fault that strikes is counted in ``stats`` under its kind.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from simulator.vopr.clock import SimTime
from simulator.vopr.prng import Prng

Will = tuple[str, bytes, bool]
KEEPALIVE_MS = 15_000  # the link's keepalive × 1.5: a dead peer is noticed within this
BACKOFF_MS = (200, 2_000)  # a client's reconnect delay after a lost connection


@dataclass(frozen=True)
class LinkFaults:
    """What the network does to one link's messages right now (both directions)."""

    loss_p: float = 0.0
    dup_p: float = 0.0
    delay_ms: tuple[int, int] = (1, 30)  # ordinary latency, one way
    stall_p: float = 0.0  # a message held up for a long while
    stall_ms: tuple[int, int] = (1_000, 20_000)

    @property
    def clean(self) -> bool:
        return self.loss_p == 0 and self.dup_p == 0 and self.stall_p == 0


CLEAN = LinkFaults()


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


class SimLink:
    """One client's connection to the simulated broker (MqttLink's interface)."""

    def __init__(
        self,
        broker: SimBroker,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        *,
        on_message: Callable[[str, bytes], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        will: Callable[[], Will] | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.subscriptions = [s for s, _ in subscriptions]
        self.on_message = on_message or (lambda t, p: None)
        self.on_state = on_state or (lambda up: None)
        self._will_fn = will
        self.will: Will | None = None  # as set at the last connect
        self.wanted = False  # started, not stopped, its process alive
        self.dead = False  # its process crashed: gone for good
        self._connected = False
        self.epoch = 0  # bumped on every connect and disconnect: deliveries to an old session drop
        self.partitioned = False
        self.drop_at_ms: int | None = None  # when a partition will be noticed
        self.retry_at_ms = 0
        self.faults = CLEAN
        self.last_sent_n = -1  # the send order of the last message delivered here
        self.last_due_ms = 0  # a clean link delivers in order (TCP): nothing before this
        self._matches: dict[str, bool] = {}

    # --- the MqttLink interface ------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> SimLink:
        self.wanted = True
        self.retry_at_ms = self.broker.time.now_ms
        self.broker.connect_due(self)
        return self

    def stop(self) -> None:
        """A clean disconnect: no will."""
        self.wanted = False
        if self._connected:
            self._drop(notify=True)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        if not self._connected:
            return False
        self.broker.route(self, topic, payload, retain)
        return True

    # --- the simulator's side --------------------------------------------------------

    def crash(self) -> None:
        """The process died: the connection closes (the broker sends the will at once, or
        when the keepalive runs out if the link is cut), and nothing is called back."""
        self.wanted = False
        self.dead = True
        if self._connected and not self.partitioned:
            self._drop(notify=False)
            self.broker.send_will(self)

    def subscribed(self, topic: str) -> bool:
        hit = self._matches.get(topic)
        if hit is None:
            hit = self._matches[topic] = any(topic_matches(s, topic) for s in self.subscriptions)
        return hit

    def _drop(self, *, notify: bool) -> None:
        self._connected = False
        self.epoch += 1
        self.drop_at_ms = None
        if notify and not self.dead:
            self.on_state(False)

    def _connect(self) -> None:
        self.will = self._will_fn() if self._will_fn is not None else None
        self._connected = True
        self.epoch += 1
        self.last_sent_n = -1
        self.on_state(True)


class SimBroker:
    def __init__(self, time: SimTime, rng: Prng, stats: Counter[str]) -> None:
        self.time = time
        self.rng = rng
        self.stats = stats
        self.up = True
        self.epoch = 0  # bumped by a restart: everything queued before it is gone
        self.links: dict[str, SimLink] = {}
        self.retained: dict[str, bytes] = {}
        self._queue: list[tuple[int, int, int, int, SimLink, str, bytes]] = []
        # per topic, the links subscribed to it, in the order of ``links`` (the order the
        # fan-out draws its randomness in); forgotten whenever a link is added or replaced
        self._subscribers: dict[str, tuple[SimLink, ...]] = {}
        self._n = 0  # send order

    def link(
        self,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        *,
        on_message: Callable[[str, bytes], None] | None = None,
        on_state: Callable[[bool], None] | None = None,
        will: Callable[[], Will] | None = None,
    ) -> SimLink:
        """A new connection for ``client_id`` (a restarted node's); the old one is gone."""
        old = self.links.get(client_id)
        new = SimLink(self, client_id, subscriptions, on_message=on_message, on_state=on_state, will=will)
        if old is not None:
            new.partitioned, new.faults = old.partitioned, old.faults  # the network is the node's
            if old.connected:
                old._drop(notify=False)
        self.links[client_id] = new
        self._subscribers.clear()
        return new

    # --- routing and delivery --------------------------------------------------------

    def route(self, sender: SimLink | None, topic: str, payload: bytes, retain: bool) -> None:
        """A message published by ``sender`` (None: by the broker itself, a will)."""
        self._n += 1
        n = self._n
        if not self.up:
            return
        up_ms, copies, ordered = 0, 1, True
        if sender is not None:
            if sender.partitioned:
                self.stats["msg_partitioned"] += 1
                return
            f = sender.faults
            if f.loss_p and self.rng.chance(f.loss_p):
                self.stats["msg_lost"] += 1
                return
            if f.dup_p and self.rng.chance(f.dup_p):
                self.stats["msg_duplicated"] += 1
                copies = 2
            up_ms, ordered = self._latency(f), f.clean
        if retain:
            self.retained[topic] = payload
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            subscribers = tuple(link for link in self.links.values() if link.subscribed(topic))
            self._subscribers[topic] = subscribers
        for _ in range(copies):
            for link in subscribers:
                if link.connected:
                    self._fan_out(link, n, up_ms, topic, payload, ordered)

    def _fan_out(self, link: SimLink, n: int, up_ms: int, topic: str, payload: bytes, ordered: bool) -> None:
        f = link.faults
        if f.loss_p and self.rng.chance(f.loss_p):
            self.stats["msg_lost"] += 1
            return
        copies = 2 if f.dup_p and self.rng.chance(f.dup_p) else 1
        if copies == 2:
            self.stats["msg_duplicated"] += 1
        for _ in range(copies):
            at = self.time.now_ms + up_ms + self._latency(f)
            if ordered and f.clean:  # in order on healthy connections (TCP); a faulty one may reorder
                at = max(at, link.last_due_ms)
            link.last_due_ms = max(link.last_due_ms, at)
            heapq.heappush(self._queue, (at, self._n_next(), n, link.epoch, link, topic, payload))

    def _n_next(self) -> int:
        self._n += 1
        return self._n

    def _latency(self, f: LinkFaults) -> int:
        if f.stall_p and self.rng.chance(f.stall_p):
            self.stats["msg_delayed"] += 1
            return self.rng.between(*f.stall_ms)
        return self.rng.between(*f.delay_ms)

    def send_will(self, link: SimLink) -> None:
        if link.will is not None and self.up:
            topic, payload, retain = link.will
            self.route(None, topic, payload, retain)

    def deliver_due(self) -> int:
        """Deliver every message due by now; returns how many arrived."""
        q, now, delivered = self._queue, self.time.now_ms, 0
        while q and q[0][0] <= now:
            _at, _, n, epoch, link, topic, payload = heapq.heappop(q)
            if epoch != link.epoch or not link.connected:
                self.stats["msg_dropped_on_disconnect"] += 1
                continue
            if link.partitioned:
                self.stats["msg_partitioned"] += 1
                continue
            if n < link.last_sent_n:
                self.stats["msg_reordered"] += 1
            link.last_sent_n = max(link.last_sent_n, n)
            delivered += 1
            link.on_message(topic, payload)
        return delivered

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    # --- connections ------------------------------------------------------------------

    def connect_due(self, link: SimLink) -> None:
        if (
            self.up
            and link.wanted
            and not link.connected
            and not link.partitioned
            and self.links.get(link.client_id) is link
            and self.time.now_ms >= link.retry_at_ms
        ):
            link._connect()
            for topic, payload in sorted(self.retained.items()):
                if link.subscribed(topic):
                    at = self.time.now_ms + self.rng.between(*link.faults.delay_ms)
                    heapq.heappush(
                        self._queue, (at, self._n_next(), self._n, link.epoch, link, topic, payload)
                    )

    def tick(self) -> None:
        """Connections: partitions noticed when their keepalive runs out, reconnects due."""
        now = self.time.now_ms
        for link in list(self.links.values()):
            if link.drop_at_ms is not None and now >= link.drop_at_ms and link.connected:
                link._drop(notify=True)
                link.retry_at_ms = now + self.rng.between(*BACKOFF_MS)
                self.send_will(link)
            elif not link.connected and link.wanted:
                self.connect_due(link)

    # --- faults -----------------------------------------------------------------------

    def partition(self, client_id: str) -> None:
        link = self.links.get(client_id)
        if link is None or link.partitioned:
            return
        link.partitioned = True
        if link.connected:
            link.drop_at_ms = self.time.now_ms + self.rng.between(0, KEEPALIVE_MS)

    def heal(self, client_id: str) -> None:
        link = self.links.get(client_id)
        if link is None or not link.partitioned:
            return
        link.partitioned = False
        if link.connected and link.drop_at_ms is not None:
            # healed before either side noticed: the session goes on, what was sent meanwhile is lost
            link.drop_at_ms = None
        if not link.connected:
            if link.dead:
                return
            link.retry_at_ms = self.time.now_ms + self.rng.between(*BACKOFF_MS)

    def set_faults(self, client_id: str, faults: LinkFaults) -> None:
        link = self.links.get(client_id)
        if link is not None:
            link.faults = faults

    def go_down(self) -> None:
        """The broker stops: queued messages and every connection are lost (no wills)."""
        self.up = False
        self.epoch += 1
        self.stats["msg_dropped_by_broker"] += len(self._queue)
        self._queue.clear()
        for link in self.links.values():
            if link.connected:
                link._drop(notify=True)
            link.retry_at_ms = self.time.now_ms + self.rng.between(*BACKOFF_MS)

    def come_up(self) -> None:
        self.up = True
        for link in self.links.values():
            if link.wanted and not link.connected:
                link.retry_at_ms = max(link.retry_at_ms, self.time.now_ms + self.rng.between(*BACKOFF_MS))
