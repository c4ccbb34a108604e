"""End to end through a real broker: terminals sell while one is cut off; every approved
sale is applied exactly once, and the ledger still balances."""

from __future__ import annotations

import random

import pytest

from shared.clock import FakeClock, ms_from_china
from simulator.harness.cluster import Cluster
from terminal.authorize import TapRequest

pytestmark = pytest.mark.broker


def test_every_approved_sale_is_applied_exactly_once_across_an_outage(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china("2026-11-26T11:45"))
    rng = random.Random(3)
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        world = cluster.demo_world(30)
        steady, flaky = cluster.add_terminal("C01"), cluster.add_terminal("C01")
        assert cluster.wait_synced()

        offline_approved = 0
        for i, diner in enumerate(world.diners):
            if i == 8:
                flaky.cut()
            if i == 22:
                assert flaky.terminal.store.pending_count() > 0  # it kept selling, unsent
                flaky.heal()
            term = flaky if i % 2 else steady
            clock.advance_ms(20_000)
            decision, sale = term.terminal.tap(TapRequest(diner.card_id))
            assert decision.approved, decision.reason
            decision, extra = term.terminal.tap(
                TapRequest(diner.card_id, kind="shop", items=(("tissue", rng.randint(1, 3)),))
            )
            if 8 <= i < 22 and term is flaky:
                offline_approved += (sale is not None and sale.offline) + (
                    extra is not None and extra.offline
                )

        assert offline_approved > 0, "the cut terminal should have sold offline"
        assert cluster.drain(60)
        audit = cluster.audit()
        assert audit.mismatch_details == []
        assert audit.approved == audit.applied > 0
        assert audit.pending == 0
        assert audit.ledger_sum_fen == 0
        assert audit.violations == []
        # every sale applied once: one ledger txn per applied sale
        conn = cluster.db()
        assert conn.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0] == audit.applied
        conn.close()


def test_a_terminal_shows_when_it_is_offline(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china("2026-11-26T12:00"))
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        world = cluster.demo_world(3)
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        t.cut()
        from simulator.waiting import wait_until

        assert wait_until(lambda: not t.terminal.sync.online, 30)
        t.terminal.tap(TapRequest(world.diners[0].card_id))
        assert any("离线" in line for line in t.terminal.display.last.lines)
