"""Registry changes made over the HTTP API reach running terminals through the real broker."""

from __future__ import annotations

import pytest

from shared.clock import FakeClock, ms_from_china
from simulator.harness.cluster import Cluster
from terminal.authorize import TapRequest

pytestmark = pytest.mark.broker


def test_lost_replaced_repriced_and_leaver_cards_behave_at_a_live_terminal(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china("2026-11-26T11:45"))
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        world = cluster.demo_world(6)
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        alice, bob = world.diners[0].card_id, world.diners[3].card_id  # both of U01, C01's host

        cluster.http("POST", f"/api/v1/cards/{alice}/lost")
        assert cluster.wait_synced()
        decision, _ = t.terminal.tap(TapRequest(alice))
        assert (decision.approved, decision.reason) == (False, "card_blocked")

        cluster.http("POST", f"/api/v1/cards/{alice}/replace", {"new_card_id": "04REPLACED"})
        cluster.http(
            "PATCH",
            "/api/v1/canteens/C01",
            {"config": {"meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1300}}}},
        )
        assert cluster.wait_synced()
        decision, _ = t.terminal.tap(TapRequest("04REPLACED"))
        assert decision.approved and decision.amount_fen == 1300

        cluster.http("POST", f"/api/v1/holders/{world.diners[3].holder_id}/leave")
        assert cluster.wait_synced()
        decision, _ = t.terminal.tap(TapRequest(bob))
        assert (decision.approved, decision.reason) == (False, "card_blocked")

        assert cluster.drain(30)
        assert cluster.audit().violations == []
