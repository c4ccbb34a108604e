"""The ingest transaction's reads folded into its one read of the terminals give what the
statements they replace gave.

* a status stored from the terminal row read with the transaction's terminals
  (:data:`server.registry.terminals.STATUS_COLUMNS`) leaves the database as
  :func:`record_status` reading the row itself does — several statuses of one terminal in
  one transaction (out of order, last wills, instances) included;
* the delta version taken from that read is the head :func:`current_version` reads;
* the keys the messages were verified with are checked in the transaction (no read of
  their version before it): a rotation made by another process between two transactions
  is seen, and the messages are opened again with the new keys;
* the publisher, which stops at a short page, publishes every delta in order, across pages.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.downstream.deltas import current_version, record_delta
from server.downstream.publisher import _PAGE, DeltaPublisher
from server.infra.db import open_db, write_txn
from server.registry import rotation
from server.registry.terminals import TerminalCredentials, record_status
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.protocol import ServerKey, Status, open_envelope, seal_hmac, topics
from shared.protocol.envelope import ServerVerifier
from tests.helpers import populated, sale, signed_batch, terminal

T0 = 1_767_672_000_000  # 2026-01-06 12:00 in Beijing

_STATUS = st.builds(
    Status,
    state=st.sampled_from(["online", "offline", "catching_up"]),
    pending=st.integers(0, 5),
    watermark_ms=st.one_of(st.none(), st.integers(T0 - 600_000, T0)),
    instance=st.sampled_from(["", "a", "b"]),
)
# (which terminal, its status, sent this long before now)
_MESSAGES = st.lists(st.tuples(st.integers(0, 1), _STATUS, st.integers(0, 900_000)), min_size=1, max_size=6)

_STATE = (
    "SELECT id, last_status_json, last_status_ms, watermark_ms, state, state_since_ms, last_seen_ms "
    "FROM terminals ORDER BY id"
)


def _world(path: Path) -> tuple[sqlite3.Connection, list[TerminalCredentials]]:
    conn = open_db(path)
    populated(conn, T0)
    return conn, [terminal(conn, "C01", T0), terminal(conn, "C01", T0)]


def _state(conn: sqlite3.Connection) -> tuple[list[tuple], list[tuple]]:
    settings_ = conn.execute("SELECT key, value FROM settings WHERE key LIKE 'terminal_%' ORDER BY key")
    return [tuple(r) for r in conn.execute(_STATE)], [tuple(r) for r in settings_]


@given(_MESSAGES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_statuses_in_one_transaction_store_what_each_alone_does(tmp_path: Path, messages: list) -> None:
    runs = []
    for name, grouped in (("together", True), ("alone", False)):
        path = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.db"
        conn, creds = _world(path)
        worker = IngestWorker(conn, FakeClock(T0), lambda *_: True)
        wire = []
        for which, status, before_ms in messages:
            c = creds[which]
            secret = bytes.fromhex(c.secret_hex)
            body = seal_hmac("status", c.terminal_id, status.to_body(), secret, T0 - before_ms)
            wire.append((topics.status(c.terminal_id), body))
        if grouped:
            worker.process(wire)
        else:
            for m in wire:
                worker.process([m])
        # the same terminal ids in both databases: compare by their order of provisioning
        ids = {c.terminal_id: f"T{k}" for k, c in enumerate(creds)}
        rows, kept = _state(conn)
        runs.append(
            (
                sorted((ids.get(r[0], r[0]), *r[1:]) for r in rows),
                sorted((_renamed(k, ids), v) for k, v in kept),
            )
        )
        conn.close()
    assert runs[0] == runs[1]


def _renamed(key: str, ids: dict[str, str]) -> str:
    for old, new in ids.items():
        key = key.replace(old, new)
    return key


def test_a_status_stored_by_ingest_is_the_one_record_status_stores(tmp_path: Path) -> None:
    conn_a, creds_a = _world(tmp_path / "a.db")
    conn_b, creds_b = _world(tmp_path / "b.db")
    statuses = [
        (Status("online", watermark_ms=T0 - 5_000, instance="a"), T0 - 4_000),
        (Status("offline", instance="a"), T0 - 3_000),  # a last will: the facts before are kept
        (Status("online", watermark_ms=T0 - 9_000, instance="b"), T0 - 8_000),  # older: instances only
    ]
    worker = IngestWorker(conn_a, FakeClock(T0), lambda *_: True)
    c = creds_a[0]
    worker.process(
        [
            (
                topics.status(c.terminal_id),
                seal_hmac("status", c.terminal_id, s.to_body(), bytes.fromhex(c.secret_hex), at),
            )
            for s, at in statuses
        ]
    )
    with write_txn(conn_b):
        for s, at in statuses:
            record_status(conn_b, creds_b[0].terminal_id, s, at, T0)
    [row_a] = [r for r in conn_a.execute(_STATE) if r[0] == c.terminal_id]
    [row_b] = [r for r in conn_b.execute(_STATE) if r[0] == creds_b[0].terminal_id]
    assert tuple(row_a)[1:] == tuple(row_b)[1:]
    assert row_a[4] == "offline" and row_a[3] == T0 - 5_000


def test_the_version_a_sale_batch_records_follows_the_head(tmp_path: Path) -> None:
    conn, creds = _world(tmp_path / "v.db")
    before = current_version(conn)
    worker = IngestWorker(conn, FakeClock(T0), lambda *_: True)
    c = creds[0]
    card = conn.execute("SELECT card_id FROM cards ORDER BY card_id LIMIT 1").fetchone()[0]
    worker.process([(topics.sales(c.terminal_id), signed_batch(c, [sale(c, 1, card, 300, T0 - 1_000)], T0))])
    assert current_version(conn) == before + 1
    stamped = conn.execute("SELECT balance_version FROM sales WHERE terminal_id = ?", (c.terminal_id,))
    assert [r[0] for r in stamped] == [before + 1]
    # a second transaction, with a delta recorded in between by another writer
    with write_txn(conn):
        record_delta(conn, [{"kind": "card", "card_id": card, "holder_id": "x", "status": "active"}], T0)
    worker.process([(topics.sales(c.terminal_id), signed_batch(c, [sale(c, 2, card, 300, T0 - 500)], T0))])
    stamped = conn.execute(
        "SELECT balance_version FROM sales WHERE terminal_id = ? AND seq = 2", (c.terminal_id,)
    )
    assert stamped.fetchone()[0] == before + 3 == current_version(conn)


def test_the_publisher_sends_every_delta_in_order_across_pages(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "p.db")
    key = ServerKey.generate()
    sent: list[bytes] = []
    publisher = DeltaPublisher(conn, key, lambda _t, p, _r: sent.append(p) or True, FakeClock(T0))
    start = publisher.published
    change = {"kind": "card", "card_id": "C", "holder_id": "H", "status": "active"}
    with write_txn(conn):
        for _ in range(2 * _PAGE + 3):
            record_delta(conn, [change], T0)
    assert publisher.publish_pending() == 2 * _PAGE + 3 - start
    verifier = ServerVerifier(key.public_bytes.hex())
    versions = [open_envelope(p, server=verifier).body["version"] for p in sent]
    assert versions == list(range(start + 1, 2 * _PAGE + 4))
    assert publisher.publish_pending() == 0
    with write_txn(conn):
        record_delta(conn, [change], T0)
    assert publisher.publish_pending() == 1  # the next commit's poke finds it


def test_a_rotation_by_another_process_is_seen_by_the_next_transaction(tmp_path: Path) -> None:
    conn, creds = _world(tmp_path / "r.db")
    sent: list[tuple[str, bytes]] = []
    worker = IngestWorker(conn, FakeClock(T0), lambda t, p, _r: sent.append((t, p)) or True)
    c = creds[0]
    status = Status("online", watermark_ms=T0 - 1_000)
    old = bytes.fromhex(c.secret_hex)
    # the worker caches the terminal's keys
    worker.process(
        [(topics.status(c.terminal_id), seal_hmac("status", c.terminal_id, status.to_body(), old, T0))]
    )
    other = open_db(tmp_path / "r.db")
    with write_txn(other):
        rotation.start(other, c.terminal_id, T0)
        rotation.complete(other, c.terminal_id, T0)
    new_hex = other.execute("SELECT secret_hex FROM terminals WHERE id = ?", (c.terminal_id,)).fetchone()[0]
    rotated = dataclasses.replace(c, secret_hex=new_hex)
    card = conn.execute("SELECT card_id FROM cards ORDER BY card_id LIMIT 1").fetchone()[0]
    sent.clear()
    batch = signed_batch(rotated, [sale(rotated, 1, card, 300, T0 - 1_000)], T0)
    worker.process([(topics.sales(c.terminal_id), batch)])
    [ack] = [p for t, p in sent if t == topics.ack(c.terminal_id)]
    env = open_envelope(ack, secret_for=lambda _s: bytes.fromhex(new_hex))  # signed with the new key
    assert [r["status"] for r in env.body["results"]] == ["applied"]
    assert worker.stats.rejected_messages == 0
