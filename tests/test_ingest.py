"""The ingest worker through a real broker: at most once, duplicates, forgeries, garbage."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator

import pytest

from server.infra.db import counter, open_db
from server.service import ServerService
from shared.clock import FakeClock
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import Ack, open_envelope, topics
from tests.helpers import populated, sale, signed_batch, terminal

pytestmark = pytest.mark.broker


@pytest.fixture
def server(broker, tmp_path, clock: FakeClock) -> Iterator[ServerService]:  # noqa: ANN001
    svc = ServerService(
        broker.url, config={"HOME": str(tmp_path)}, clock=clock, client_id=f"server-{tmp_path.name}"
    ).start()
    yield svc
    svc.stop()


class FakeTerminalLink:
    """A bare MQTT client speaking for a terminal: publishes raw bytes, collects acks."""

    def __init__(self, broker_url: str, terminal_id: str, secret: bytes) -> None:
        self.terminal_id = terminal_id
        self.secret = secret
        self.acks: queue.Queue[Ack] = queue.Queue()
        self.link = MqttLink(
            f"fake-{terminal_id}",
            BrokerAddress.parse(broker_url),
            subscriptions=[(topics.ack(terminal_id), 1)],
            on_message=self._on_message,
        ).start()
        assert self.link.wait_connected(10)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic != topics.ack(self.terminal_id):
            return  # the embedded broker has been seen delivering stray retained messages
        env = open_envelope(payload, secret_for=lambda s: self.secret if s == "server" else None)
        self.acks.put(Ack.from_body(env.body))

    def send(self, payload: bytes) -> None:
        assert self.link.publish(topics.sales(self.terminal_id), payload)

    def next_ack(self) -> Ack:
        return self.acks.get(timeout=10)


def test_same_sale_twice_tampered_and_malformed(server: ServerService, clock: FakeClock) -> None:
    conn = open_db(server.app.config["DATABASE"])
    world = populated(conn, clock.now_ms())
    creds = terminal(conn, "C01", clock.now_ms())
    card = world.diners[0].card_id
    fake = FakeTerminalLink(server.broker_url, creds.terminal_id, bytes.fromhex(creds.secret_hex))

    the_sale = sale(creds, 1, card, 1200, clock.now_ms())
    wire = signed_batch(creds, [the_sale], clock.now_ms(), msg_id="first")
    fake.send(wire)
    first = fake.next_ack()
    fake.send(wire)  # the very same bytes again: a replay / a resend after a lost ack
    second = fake.next_ack()
    tampered = json.loads(
        signed_batch(creds, [sale(creds, 2, card, 1200, clock.now_ms())], clock.now_ms(), msg_id="forged")
    )
    tampered["body"]["sales"][0]["amount_fen"] = 1
    tampered["body"]["sales"][0]["subsidy_fen"] = 1
    fake.send(json.dumps(tampered).encode())
    forged = fake.next_ack()
    fake.send(b'{"schema_version": 1, "type": "sale_batch", ')
    garbage = fake.next_ack()

    assert first.results[0].status == "applied"
    assert second.results[0].status == "duplicate"
    # the duplicate carries the first result, not a new one
    assert (second.results[0].subsidy_fen, second.results[0].balance) == (
        first.results[0].subsidy_fen,
        first.results[0].balance,
    )
    assert (forged.in_reply_to, forged.reason, forged.results) == ("forged", "bad_signature", ())
    assert (garbage.reason, garbage.results) == ("malformed", ())

    assert conn.execute("SELECT count(*) FROM sales").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0] == 1
    # (other tests' retained status messages may be refused too: count this terminal's)
    reasons = sorted(
        r[0]
        for r in conn.execute("SELECT reason FROM rejections WHERE terminal_id = ?", (creds.terminal_id,))
    )
    assert reasons == ["bad_signature", "malformed"]
    assert counter(conn, "sales_duplicate") == 1

    # the worker is still running: a new sale goes through
    assert server.ingest is not None and server.ingest.alive
    fake.send(signed_batch(creds, [sale(creds, 2, card, 500, clock.now_ms())], clock.now_ms()))
    assert fake.next_ack().results[0].status == "applied"
    fake.link.stop()
    conn.close()


def test_a_reused_sequence_number_with_another_uuid_is_refused(
    server: ServerService, clock: FakeClock
) -> None:
    conn = open_db(server.app.config["DATABASE"])
    world = populated(conn, clock.now_ms())
    creds = terminal(conn, "C01", clock.now_ms())
    fake = FakeTerminalLink(server.broker_url, creds.terminal_id, bytes.fromhex(creds.secret_hex))
    fake.send(
        signed_batch(creds, [sale(creds, 1, world.diners[0].card_id, 1200, clock.now_ms())], clock.now_ms())
    )
    assert fake.next_ack().results[0].status == "applied"
    fake.send(
        signed_batch(creds, [sale(creds, 1, world.diners[1].card_id, 900, clock.now_ms())], clock.now_ms())
    )
    result = fake.next_ack().results[0]
    assert (result.status, result.reason) == ("rejected", "sale_id_conflict")
    assert conn.execute("SELECT count(*) FROM sales").fetchone()[0] == 1
    fake.link.stop()
    conn.close()


def test_another_terminals_topic_is_refused(server: ServerService, clock: FakeClock) -> None:
    conn = open_db(server.app.config["DATABASE"])
    world = populated(conn, clock.now_ms())
    a = terminal(conn, "C01", clock.now_ms())
    b = terminal(conn, "C01", clock.now_ms())
    fake_b = FakeTerminalLink(server.broker_url, b.terminal_id, bytes.fromhex(b.secret_hex))
    # terminal A's correctly signed batch, published on B's topic
    fake_b.send(signed_batch(a, [sale(a, 1, world.diners[0].card_id, 1200, clock.now_ms())], clock.now_ms()))
    assert fake_b.next_ack().reason == "terminal_mismatch"
    assert conn.execute("SELECT count(*) FROM sales").fetchone()[0] == 0
    fake_b.link.stop()
    conn.close()
