"""No change a terminal cannot read is ever recorded by the server, and a terminal that still
meets one (from an older server) skips it, says so in its status and keeps selling instead of
never catching up again (issue 11, finding 2)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from server.downstream.deltas import current_version, record_delta
from server.infra.db import write_txn
from shared.amounts import FEN_MAX
from shared.clock import FakeClock, ms_from_china
from shared.errors import DomainError
from shared.protocol import Ack, Delta, ProtocolError
from simulator.harness.cluster import Cluster
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from terminal.authorize import TapRequest


def _bad_holder(holder_id: str, unit_id: str) -> dict:
    return {
        "kind": "holder",
        "holder_id": holder_id,
        "unit_id": unit_id,
        "subsidy_fen": FEN_MAX + 1,
        "self_fen": 0,
        "blocked": False,
    }


def test_the_server_refuses_to_record_a_change_terminals_could_not_read(conn: sqlite3.Connection) -> None:
    before = current_version(conn)
    with pytest.raises(DomainError) as err, write_txn(conn):
        conn.execute("INSERT INTO settings(key, value) VALUES ('probe', 'x')")
        record_delta(conn, [{"kind": "settings", "config": {}}, _bad_holder("H1", "U1")], 0)
    assert err.value.code == "change_not_carriable" and "subsidy_fen" in err.value.detail
    assert current_version(conn) == before  # the whole transaction rolled back
    assert conn.execute("SELECT 1 FROM settings WHERE key = 'probe'").fetchone() is None


def test_an_ack_with_an_unreadable_balance_still_settles_its_sales() -> None:
    result = {
        "terminal_id": "T1",
        "seq": 1,
        "uuid": "u1",
        "status": "applied",
        "reason": None,
        "subsidy_fen": 100,
        "self_fen": 0,
        "overdraft_fen": 0,
        "holder_id": "H1",
        "balance": {"subsidy_fen": FEN_MAX + 1, "self_fen": 0, "version": 3},
    }
    body = {"in_reply_to": "m1", "results": [result], "reason": None}
    with pytest.raises(ProtocolError):
        Ack.from_body(body)  # strict, as the server reads it
    faults: list[ProtocolError] = []
    ack = Ack.from_body(body, faults)
    assert [(r.seq, r.status, r.balance) for r in ack.results] == [(1, "applied", None)]
    assert [f.code for f in faults] == ["bad_field"]


def test_a_delta_with_an_unknown_kind_is_still_refused_whole() -> None:
    body = {"version": 2, "changes": [{"kind": "teleport"}, _bad_holder("H1", "U1")]}
    with pytest.raises(ProtocolError) as err:
        Delta.from_body(body, [])
    assert err.value.code == "unknown_change_kind"


@pytest.mark.broker
def test_a_terminal_skips_an_undecodable_delta_reports_it_and_keeps_selling(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        conn = cluster.db()
        world = demo_world(conn, clock.now_ms(), diners=4)
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        victim, lost, buyer = world.diners[0], world.diners[1], world.diners[2]
        unit = conn.execute("SELECT unit_id FROM holders WHERE id = ?", (victim.holder_id,)).fetchone()[0]

        def older_server_writes(*changes: dict) -> None:  # what record_delta now refuses
            with write_txn(conn):
                conn.execute(  # the next version, as record_delta numbers them
                    "INSERT INTO deltas(version, at_ms, changes_json) "
                    "SELECT coalesce(max(version), 0) + 1, ?, ? FROM deltas",
                    (clock.now_ms(), json.dumps(list(changes))),
                )

        # live, over MQTT: the bad change is skipped, the good one in the same delta applied
        older_server_writes(
            _bad_holder(victim.holder_id, unit),
            {"kind": "card", "card_id": lost.card_id, "holder_id": lost.holder_id, "status": "lost"},
        )
        assert cluster.wait_synced(20)
        sync = t.terminal.sync
        assert sync.stats.skipped_changes == 1 and sync.sync_fault == "bad_field"
        assert t.terminal.store.card_state(lost.card_id).card_status == "lost"  # type: ignore[union-attr]
        assert t.terminal.tap(TapRequest(buyer.card_id))[0].approved
        assert t.terminal.tap(TapRequest(victim.card_id))[0].approved  # on the last good state

        # missed while away, fetched over HTTP on catch-up: the same, and no wedge
        t.cut()
        assert wait_until(lambda: not sync.online, 30)
        older_server_writes(_bad_holder(buyer.holder_id, unit))
        with write_txn(conn):
            record_delta(
                conn, [{"kind": "settings", "config": {"risk": {"max_sale_fen": 9000}}}], clock.now_ms()
            )
        t.heal()
        assert cluster.wait_synced(20)
        assert sync.stats.skipped_changes == 2 and sync.in_sync
        assert t.terminal.rules()[1].max_sale_fen == 9000
        assert t.terminal.tap(TapRequest(world.diners[3].card_id))[0].approved  # buyer had lunch
        # the fault reaches the server in the terminal's status
        sync.send_status()
        assert wait_until(
            lambda: (
                json.loads(
                    conn.execute("SELECT last_status_json FROM terminals WHERE id = ?", (t.id,)).fetchone()[0]
                    or "{}"
                ).get("sync_fault")
                == "bad_field"
            ),
            10,
        )
        assert cluster.drain(30)
        conn.close()
