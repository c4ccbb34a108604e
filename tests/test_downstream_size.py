"""A city-sized cache still travels: big changes split into several deltas that each fit
in an MQTT message, and a snapshot of 50,000+ staff is accepted over HTTP."""

from __future__ import annotations

import sqlite3

import pytest

from server.downstream.deltas import MAX_DELTA_BYTES, deltas_since, record_delta
from server.infra.db import write_txn
from shared.protocol import ProtocolError, ServerKey, ServerVerifier, Snapshot, open_envelope, seal_server
from shared.protocol.codec import MAX_MESSAGE_BYTES, MAX_SNAPSHOT_BYTES


def holder(i: int) -> dict:
    return {
        "kind": "holder",
        "holder_id": f"H{i:06d}",
        "unit_id": "U01",
        "subsidy_fen": 30000,
        "self_fen": 0,
        "blocked": False,
    }


def test_a_huge_change_set_becomes_consecutive_deltas_that_each_fit_a_message(
    conn: sqlite3.Connection,
) -> None:
    key = ServerKey.generate()
    with write_txn(conn):
        last = record_delta(conn, [holder(i) for i in range(30_000)], 0)
    deltas = deltas_since(conn, 0, limit=1000)
    assert [d.version for d in deltas] == list(range(1, last + 1))
    assert last > 1
    assert sum(len(d.changes) for d in deltas) == 30_000
    for d in deltas:
        wire = seal_server("delta", d.to_body(), key, 0)
        assert len(wire) < MAX_MESSAGE_BYTES
        assert len(wire) < MAX_DELTA_BYTES + 4096
        open_envelope(wire, server=ServerVerifier(key.public_hex))  # accepted at the default bound


def test_a_small_change_set_stays_one_delta(conn: sqlite3.Connection) -> None:
    with write_txn(conn):
        assert record_delta(conn, [holder(1), holder(2)], 0) == 1


def test_a_city_snapshot_is_accepted_over_http_but_not_as_an_mqtt_message() -> None:
    key = ServerKey.generate()
    changes = tuple(holder(i) for i in range(60_000)) + tuple(
        {"kind": "card", "card_id": f"C{i:06d}", "holder_id": f"H{i:06d}", "status": "active"}
        for i in range(60_000)
    )
    wire = seal_server("snapshot", Snapshot(7, changes).to_body(), key, 0)
    assert MAX_MESSAGE_BYTES < len(wire) < MAX_SNAPSHOT_BYTES
    verifier = ServerVerifier(key.public_hex)
    with pytest.raises(ProtocolError) as err:
        open_envelope(wire, server=verifier)
    assert err.value.code == "too_large"
    env = open_envelope(wire, server=verifier, max_bytes=MAX_SNAPSHOT_BYTES)
    assert len(Snapshot.from_body(env.body).changes) == 120_000
