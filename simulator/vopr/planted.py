"""Known bugs, planted on purpose, to show the simulator finds them (``--plant NAME``).

Each is a small subclass or wrapper of the real code, used only when asked for; the real
code has no switch for them. ``tests/test_vopr.py`` shows each is found within a bounded
number of seeds.

* ``ack_before_commit`` — the server acknowledges a batch inside its transaction, before
  the commit: a crash between the ack and the commit loses sales the terminal already
  dropped from its outbox (found as ``lost``).
* ``outbox_on_broker_ack`` — the terminal takes the broker's acceptance of a batch (MQTT's
  PUBACK) for the server's acknowledgement and settles its sales at once: a batch lost
  on the way, or in a broker restart, or in a server crash before the commit, is never
  sent again (``lost``).
* ``silent_recovery`` — after a crash between journaling a sale and telling the diner, the
  terminal releases the sale without announcing it: the server applies a sale its diner
  was never told about (``applied_not_approved`` / ``journaled_not_announced``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from server.infra import db as dbm
from server.sales.ingest import IngestWorker, Message
from server.sales.opening import open_decoded
from shared.protocol import SaleResult, seal_hmac, topics
from simulator.vopr.network import SimBroker, SimLink
from terminal.agent import Terminal
from terminal.store import Store

LinkFactory = Callable[..., SimLink]


class AckBeforeCommitWorker(IngestWorker):
    """PLANTED BUG: publishes the acks inside the write transaction."""

    def process(self, messages: list[Message]) -> None:
        now = self._clock.now_ms()
        replies: list = []
        self._book.refresh()  # the keys as they are (the real worker checks them in the transaction)
        try:
            with dbm.write_txn(self._conn):
                self._apply([open_decoded(self._book, t, p, now) for t, p in messages], now, replies, [])
                for terminal_id, ack in replies:
                    secret = self._book.secret(terminal_id)
                    if secret is not None:
                        payload = seal_hmac("ack", "server", ack.to_body(), secret, self._clock.now_ms())
                        self._publish(topics.ack(terminal_id), payload, False)
        except BaseException:
            self._accounts.rollback()
            raise
        self._accounts.commit()
        self.stats.messages += len(messages)


class SilentRecoveryTerminal(Terminal):
    """PLANTED BUG: releases a sale journaled before a crash without telling the diner."""

    def recover(self) -> int:
        sales = self.store.unannounced()
        for sale in sales:
            self.store.mark_announced(sale.seq)
        return len(sales)


def broker_ack_links(broker: SimBroker, db_path_of: Callable[[str], str]) -> LinkFactory:
    """PLANTED BUG: a terminal's link that settles a sales batch when the broker takes it."""

    def make(client_id: str, subscriptions: list[tuple[str, int]], **callbacks: object) -> SimLink:
        link = broker.link(client_id, subscriptions, **callbacks)  # type: ignore[arg-type]
        publish = link.publish

        def publish_and_forget(topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
            sent = publish(topic, payload, qos=qos, retain=retain)
            if sent and topic == topics.sales(client_id):
                sales = json.loads(payload)["body"]["sales"]
                store = Store(db_path_of(client_id))
                try:
                    store.apply_results(
                        tuple(SaleResult(client_id, s["seq"], s["uuid"], "applied", None) for s in sales),
                        client_id,
                    )
                finally:
                    store.close()
            return sent

        link.publish = publish_and_forget  # type: ignore[method-assign]
        return link

    return make


@dataclass(frozen=True)
class Plant:
    """What a planted bug swaps in (nothing, by default)."""

    worker: Callable[..., IngestWorker] = IngestWorker
    terminal: Callable[..., Terminal] = Terminal
    links: Callable[[SimBroker, Callable[[str], str]], LinkFactory] | None = field(default=None)

    def link(self, broker: SimBroker, db_path_of: Callable[[str], str]) -> LinkFactory:
        return self.links(broker, db_path_of) if self.links is not None else broker.link


PLANTS: dict[str, Plant] = {
    "ack_before_commit": Plant(worker=AckBeforeCommitWorker),
    "outbox_on_broker_ack": Plant(links=broker_ack_links),
    "silent_recovery": Plant(terminal=SilentRecoveryTerminal),
}
