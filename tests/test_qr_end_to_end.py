"""A QR code spent at two terminals, end to end through a real broker: both sales are
applied (the meals were served), the server records and reports it, and the revocation
reaches every terminal, which then refuses that credential's codes."""

from __future__ import annotations

import pytest

from server.sales import qr_codes
from shared.clock import FakeClock, ms_from_china
from shared.paycode import make_code
from simulator.harness.cluster import Cluster
from simulator.waiting import wait_until
from terminal.authorize import TapRequest

pytestmark = pytest.mark.broker


def test_a_double_spent_code_is_accounted_reported_and_revoked_everywhere(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china("2026-11-26T12:00"))
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        world = cluster.demo_world(4)
        diner = world.diners[0]
        cred = cluster.http(
            "POST", "/api/v1/qr/credentials", {"card_id": diner.card_id, "offline_allowance_fen": 2000}
        )
        a, b = cluster.add_terminal("C01"), cluster.add_terminal("C01")
        assert cluster.wait_synced()

        phone = cred["page_path"].replace("/qr/", "/api/v1/qr/code/")
        code = cluster.http("GET", phone)["code"]  # what the diner's phone shows
        first, _ = a.terminal.tap(TapRequest(None, method="qr", credential=code))
        copied, _ = b.terminal.tap(
            TapRequest(None, method="qr", kind="shop", items=(("water", 1),), credential=code)
        )
        assert first.approved and copied.approved  # neither terminal can know of the other
        assert a.terminal.tap(TapRequest(None, method="qr", credential=code))[0].reason == "qr_reused"

        assert cluster.drain(30)
        [incident] = cluster.http("GET", "/api/v1/qr/incidents")
        assert (incident["kind"], incident["action"]) == ("qr_double_spent", "credential_revoked")
        assert cluster.wait_synced()
        for h in (a, b):
            assert wait_until(
                lambda h=h: h.terminal.identify.qr.key(diner.holder_id).expires_at_ms <= clock.now_ms(), 30
            )

        seed = qr_codes.credential_seed(
            qr_codes.qr_secret(cluster.server.app.extensions["canteen_server_key"]), cred["id"]
        )
        fresh = make_code(seed, diner.card_id, 99, clock.now_ms())
        assert b.terminal.tap(TapRequest(None, method="qr", credential=fresh))[0].reason == "qr_no_credential"

        audit = cluster.audit()
        assert audit.approved == audit.applied == 2
        assert audit.mismatch_details == [] and audit.violations == []
