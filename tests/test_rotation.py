"""Key rotation (issue 15): the sealed offer, and the ingest worker through a rotation —
old key, new key, an old-key batch still on its way (grace), and after the grace."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.app import create_app
from server.infra.db import open_db, write_txn
from server.infra.terminal_keys import GRACE_MS
from server.registry import rotation
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.errors import DomainError
from shared.protocol import Ack, ProtocolError, ServerVerifier, Status, open_envelope, seal_hmac, topics
from shared.protocol.rekey import Rekey, key_id, open_key, seal_key
from tests.helpers import populated, sale, terminal

OLD, NEW = bytes(range(32)), bytes(range(1, 33))


def test_a_sealed_key_opens_only_with_the_current_key_of_its_terminal() -> None:
    offer = seal_key(OLD, "T0001", NEW)
    assert open_key(OLD, "T0001", offer) == NEW
    assert offer.key_id == key_id(NEW) and offer.for_key_id == key_id(OLD)
    assert NEW.hex() not in json.dumps(offer.to_body())  # sealed, not shown
    with pytest.raises(ProtocolError) as wrong_key:
        open_key(NEW, "T0001", offer)
    assert wrong_key.value.code == "rekey_unreadable"
    with pytest.raises(ProtocolError):
        open_key(OLD, "T0002", offer)  # another terminal's offer
    forged = Rekey.from_body({**offer.to_body(), "terminal_id": "T0002"})
    with pytest.raises(ProtocolError):
        open_key(OLD, "T0002", forged)  # the id is bound into the seal
    flipped = offer.sealed_hex[:-2] + ("00" if offer.sealed_hex[-2:] != "00" else "01")
    with pytest.raises(ProtocolError):
        open_key(OLD, "T0001", Rekey.from_body({**offer.to_body(), "sealed_hex": flipped}))


@dataclass
class Rig:
    worker: IngestWorker
    conn: object
    clock: FakeClock
    creds: object
    card: str
    verifier: ServerVerifier
    published: list[tuple[str, bytes, bool]] = field(default_factory=list)
    keys_changed: list[int] = field(default_factory=list)
    seq: int = 0

    def batch(self, secret: bytes, n: int = 1) -> tuple[bytes, list[int]]:
        sales = []
        for _ in range(n):
            self.seq += 1
            sales.append(sale(self.creds, self.seq, self.card, 300, self.clock.now_ms()))
        body = {"sales": [s.to_dict() for s in sales]}
        payload = seal_hmac(
            "sale_batch", self.creds.terminal_id, body, secret, self.clock.now_ms(), uuid.uuid4().hex
        )
        return payload, [s.seq for s in sales]

    def status(self, secret: bytes) -> bytes:
        body = Status(state="online", clock_ms=self.clock.now_ms(), delta_version=0).to_body()
        return seal_hmac("status", self.creds.terminal_id, body, secret, self.clock.now_ms())

    def send(self, topic: str, payload: bytes) -> None:
        self.worker.process([(topic, payload)])

    def acks(self, secret: bytes, last: int) -> list[Ack]:
        """The last ``last`` acks, verified with ``secret``."""
        tid = self.creds.terminal_id
        mine = [p for t, p, _ in self.published if t == topics.ack(tid)][-last:]
        return [
            Ack.from_body(open_envelope(p, secret_for=lambda s: secret, expect_type="ack").body) for p in mine
        ]

    def applied(self) -> list[int]:
        rows = self.conn.execute(  # type: ignore[attr-defined]
            "SELECT seq FROM sales WHERE terminal_id = ? AND status = 'applied' ORDER BY seq",
            (self.creds.terminal_id,),
        )
        return [r[0] for r in rows]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = FakeClock(ms_from_china("2026-01-06T15:00"))
    app = create_app({"HOME": str(tmp_path), "TESTING": True}, clock=clock)
    conn = open_db(app.config["DATABASE"])
    world = populated(conn, clock.now_ms(), diners=4)
    creds = terminal(conn, "C01", clock.now_ms())
    key = app.extensions["canteen_server_key"]
    rig = Rig(None, conn, clock, creds, world.diners[0].card_id, ServerVerifier(key.public_hex))  # type: ignore[arg-type]
    rig.worker = IngestWorker(
        open_db(app.config["DATABASE"]),
        clock,
        lambda t, p, r: rig.published.append((t, p, r)) or True,
        server_key=key,
        on_keys_changed=lambda: rig.keys_changed.append(1),
    )
    yield rig
    conn.close()


def test_unsent_sales_across_a_rotation_are_all_applied_once(rig: Rig) -> None:
    tid, old = rig.creds.terminal_id, bytes.fromhex(rig.creds.secret_hex)  # type: ignore[attr-defined]
    with write_txn(rig.conn):
        started = rotation.start(rig.conn, tid, rig.clock.now_ms())  # type: ignore[arg-type]
    with pytest.raises(DomainError) as twice:
        with write_txn(rig.conn):
            rotation.start(rig.conn, tid, rig.clock.now_ms())  # type: ignore[arg-type]
    assert twice.value.code == "rotation_pending"

    early, early_seqs = rig.batch(old, 3)  # signed before the terminal heard of the rotation
    rig.send(topics.sales(tid), early)
    rig.send(topics.status(tid), rig.status(old))  # its heartbeat: the server offers the key
    offers = [(p, r) for t, p, r in rig.published if t == topics.rekey(tid)]
    assert len(offers) == 1 and offers[0][1] is True  # retained
    offer = Rekey.from_body(open_envelope(offers[0][0], server=rig.verifier, expect_type="rekey").body)
    new = open_key(old, tid, offer)
    assert key_id(new) == started.next_key_id

    in_flight, in_flight_seqs = rig.batch(old, 2)  # signed just before the switch, arrives after it
    switched, switched_seqs = rig.batch(new, 2)  # the outbox's rest, signed with the new key
    rig.send(topics.sales(tid), switched)  # the first message with the new key completes it
    assert rig.keys_changed == [1]
    assert rig.published[-1] == (topics.rekey(tid), b"", True)  # the retained offer withdrawn
    row = rig.conn.execute(  # type: ignore[attr-defined]
        "SELECT secret_hex, next_secret_hex, previous_secret_hex FROM terminals WHERE id = ?", (tid,)
    ).fetchone()
    assert tuple(row) == (new.hex(), None, old.hex())
    rig.send(topics.sales(tid), in_flight)  # within the grace period: accepted
    rig.send(topics.sales(tid), switched)  # a resend: duplicate, not applied twice
    assert rig.applied() == sorted(early_seqs + in_flight_seqs + switched_seqs)
    assert [a.reason for a in rig.acks(new, 3)] == [None, None, None]  # acks now under the new key

    rig.clock.advance_ms(GRACE_MS + 1)
    late, late_seqs = rig.batch(old, 1)
    rig.send(topics.sales(tid), late)  # the old key after the grace period: refused, nothing applied
    assert rig.acks(new, 1)[0].reason == "bad_signature"
    assert late_seqs[0] not in rig.applied()


def test_an_offer_is_not_repeated_every_heartbeat(rig: Rig) -> None:
    tid, old = rig.creds.terminal_id, bytes.fromhex(rig.creds.secret_hex)  # type: ignore[attr-defined]
    with write_txn(rig.conn):
        rotation.start(rig.conn, tid, rig.clock.now_ms())  # type: ignore[arg-type]
    for _ in range(3):
        rig.send(topics.status(tid), rig.status(old))
    assert len([t for t, _, _ in rig.published if t == topics.rekey(tid)]) == 1


def test_a_revoked_terminal_cannot_be_rotated_nor_offered(rig: Rig) -> None:
    tid = rig.creds.terminal_id  # type: ignore[attr-defined]
    with write_txn(rig.conn):
        rotation.start(rig.conn, tid, rig.clock.now_ms())  # type: ignore[arg-type]
        from server.registry.terminals import revoke  # noqa: PLC0415 — one test's extra step

        revoke(rig.conn, tid, rig.clock.now_ms())  # type: ignore[arg-type]
    assert rotation.offer(rig.conn, tid) is None  # type: ignore[arg-type]
    with pytest.raises(DomainError) as refused, write_txn(rig.conn):
        rotation.start(rig.conn, tid, rig.clock.now_ms())  # type: ignore[arg-type]
    assert refused.value.code == "terminal_revoked"
