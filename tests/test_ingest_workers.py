"""Two server processes splitting ingest through a Mosquitto shared subscription
(``MQTT_INGEST_SHARE_GROUP``, issue 16): each sale message reaches one of them, both work,
and every sale is applied once with the ledger balanced."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.service import ServerService
from shared.broker import MosquittoBroker
from shared.clock import FakeClock, ms_from_china
from simulator.harness.cluster import Cluster
from terminal.authorize import TapRequest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary ($share)"),
]


def test_two_ingest_processes_share_the_sales_and_each_is_applied_once(tmp_path: Path) -> None:
    clock = FakeClock(ms_from_china("2026-11-26T11:45"))
    group = {"MQTT_INGEST_SHARE_GROUP": "ingest"}
    broker = MosquittoBroker().start()
    try:
        with Cluster(tmp_path, broker=broker, clock=clock, server_config=group) as cluster:
            world = cluster.demo_world(30)
            second = ServerService(
                broker.url, config={"HOME": str(cluster.workdir), **group}, clock=clock
            ).start()
            try:
                # one sale per message; no resend within the test (a resend is a legitimate duplicate)
                terms = [cluster.add_terminal("C01", batch_size=1, ack_timeout_s=60.0) for _ in range(2)]
                assert cluster.wait_synced(30)
                for i, diner in enumerate(world.diners):
                    clock.advance_ms(20_000)
                    decision, _ = terms[i % 2].terminal.tap(TapRequest(diner.card_id))
                    assert decision.approved, decision.reason
                assert cluster.drain(60)
                workers = [cluster.server.ingest, second.ingest]  # type: ignore[union-attr]
                applied = [w.stats.applied for w in workers]  # type: ignore[union-attr]
                assert min(applied) > 0  # both took a share
                # none saw a sale twice (without the group both get every message)
                assert sum(w.stats.duplicates for w in workers) == 0  # type: ignore[union-attr]
                audit = cluster.audit()
                assert audit.approved == audit.applied == len(world.diners) == sum(applied)
                assert audit.pending == 0 and audit.ledger_sum_fen == 0 and audit.violations == []
                conn = cluster.db()
                sales = conn.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0]
                conn.close()
                assert sales == audit.applied
            finally:
                second.stop()
    finally:
        broker.stop()
