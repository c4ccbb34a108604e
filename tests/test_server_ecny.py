"""Digital RMB at the server: sales outside the purses but in the takings as their own
method, the gateway's signed callback, refunds, reconciliation."""

from __future__ import annotations

import pytest

from server.closing.check import all_violations
from server.infra.auth import create_token
from server.infra.db import write_txn
from server.registry.terminals import provision
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.ecny_gateway import SimulatedGateway
from shared.protocol import topics
from terminal.ecny import EcnyCashier
from tests.helpers import populated, sale, signed_batch
from tests.ident_helpers import offline_terminal

DAY = 86_400_000


@pytest.fixture
def flow(app, client, conn, clock: FakeClock, tmp_path):  # noqa: ANN001, ANN201
    """A server with a city, a terminal T-ident at C01 and a simulated gateway whose result
    callbacks reach the server's notify endpoint."""
    populated(conn, clock.now_ms())
    with write_txn(conn):
        creds = provision(conn, "C01", clock.now_ms(), "00" * 32, terminal_id="T-ident")
    gw = SimulatedGateway(clock)
    gw.notify = lambda body, sig: client.post(
        "/api/v1/ecny/notify", data=body, headers={"X-Ecny-Signature": sig}
    )
    app.extensions["ecny_gateway"] = gw
    gw.add_wallet("W1", 10_000)
    t = offline_terminal(tmp_path, clock)
    yield creds, gw, EcnyCashier(t, gw)
    t.store.close()


def headers(conn, clock, role: str = "admin", **kw: str) -> dict[str, str]:  # noqa: ANN001
    with write_txn(conn):
        return {"Authorization": f"Bearer {create_token(conn, role, clock.now_ms(), **kw)}"}


def ingest(conn, clock, creds, sales) -> None:  # noqa: ANN001
    IngestWorker(conn, clock, lambda *a: True).process(
        [(topics.sales(creds.terminal_id), signed_batch(creds, sales, clock.now_ms()))]
    )


def totals(client, conn, clock, **q):  # noqa: ANN001, ANN201
    args = {"from_ms": clock.now_ms() - DAY, "to_ms": clock.now_ms() + DAY, **q}
    r = client.get("/api/v1/ecny/totals", query_string=args, headers=headers(conn, clock))
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def test_an_ecny_sale_is_in_the_takings_as_its_own_method_and_moves_no_purse(
    flow, client, conn, clock
) -> None:  # noqa: ANN001
    creds, gw, cashier = flow
    entries_before = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    _, ecny_sale = cashier.pay_with_code(gw.payment_code("W1"))
    card_sale = sale(creds, 2, "C00001", 1200, clock.now_ms())
    ingest(conn, clock, creds, [ecny_sale, card_sale])
    assert (
        conn.execute("SELECT count(*) FROM entries").fetchone()[0] == entries_before + 1
    )  # the card sale's only
    assert all_violations(conn) == []
    t = totals(client, conn, clock, canteen_id="C01")
    assert t["methods"] == {
        "card": {"count": 1, "amount_fen": 1200},
        "ecny": {"count": 1, "amount_fen": 1500},
    }
    assert (t["ecny_net_fen"], t["total_fen"]) == (1500, 2700)
    assert t["ecny_reconciliation"] == {"paid_without_sale": [], "sale_without_payment": []}


def test_a_refund_goes_through_the_gateway_and_shows_in_the_totals(flow, client, conn, clock) -> None:  # noqa: ANN001
    creds, gw, cashier = flow
    _, s = cashier.pay_with_code(gw.payment_code("W1"))
    ingest(conn, clock, creds, [s])
    order_no = s.credential.removeprefix("ecny:")
    h = headers(conn, clock)
    r = client.post(
        "/api/v1/ecny/refunds",
        json={"order_no": order_no, "amount_fen": 500, "reason": "菜品问题"},
        headers=h,
    )
    assert r.status_code == 201, r.get_json()
    assert gw.wallets["W1"].balance_fen == 10_000 - 1500 + 500
    too_much = client.post("/api/v1/ecny/refunds", json={"order_no": order_no, "amount_fen": 1001}, headers=h)
    assert (too_much.status_code, too_much.get_json()["code"]) == (400, "ecny_refund_too_large")
    t = totals(client, conn, clock)
    assert t["ecny_refunds"] == {"count": 1, "amount_fen": 500} and t["ecny_net_fen"] == 1000
    assert conn.execute("SELECT refunded_fen FROM ecny_payments").fetchone()[0] == 500


def test_a_forged_gateway_callback_is_refused(flow, client, conn) -> None:  # noqa: ANN001
    r = client.post("/api/v1/ecny/notify", data=b'{"order_no":"x"}', headers={"X-Ecny-Signature": "00"})
    assert (r.status_code, r.get_json()["code"]) == (400, "ecny_bad_callback")
    assert conn.execute("SELECT count(*) FROM ecny_payments").fetchone()[0] == 0


def test_reconciliation_shows_a_payment_no_terminal_reported(flow, client, conn, clock) -> None:  # noqa: ANN001
    creds, gw, cashier = flow
    _, s = cashier.pay_with_code(gw.payment_code("W1"))  # paid, still in the terminal's outbox
    order_no = s.credential.removeprefix("ecny:")
    assert totals(client, conn, clock)["ecny_reconciliation"]["paid_without_sale"] == [order_no]
    ingest(conn, clock, creds, [s])
    assert totals(client, conn, clock)["ecny_reconciliation"]["paid_without_sale"] == []


def test_an_operator_sees_only_their_canteens_takings(flow, client, conn, clock) -> None:  # noqa: ANN001
    op = conn.execute("SELECT operator FROM canteens WHERE id = 'C01'").fetchone()[0]
    h = headers(conn, clock, "operator", operator=op)
    q = {"from_ms": 0, "to_ms": clock.now_ms()}
    assert (
        client.get("/api/v1/ecny/totals", query_string={**q, "canteen_id": "C01"}, headers=h).status_code
        == 200
    )
    assert (
        client.get("/api/v1/ecny/totals", query_string={**q, "canteen_id": "C02"}, headers=h).status_code
        == 403
    )
    assert client.get("/api/v1/ecny/totals", query_string=q, headers=h).status_code == 403


def test_an_order_claimed_by_two_sales_is_an_incident(flow, conn, clock) -> None:  # noqa: ANN001
    creds, gw, cashier = flow
    _, s = cashier.pay_with_code(gw.payment_code("W1"))
    copy = sale(creds, 9, None, 1500, clock.now_ms(), method="ecny", subsidy_fen=0, credential=s.credential)
    ingest(conn, clock, creds, [s, copy])
    assert conn.execute("SELECT kind FROM credential_incidents").fetchone()[0] == "ecny_order_reused"


def test_payment_totals_cli_lists_ecny_as_its_own_method(app, flow, conn, clock) -> None:  # noqa: ANN001
    import json

    from click.testing import CliRunner

    from server.cli.root import main

    creds, gw, cashier = flow
    _, s = cashier.pay_with_code(gw.payment_code("W1"))
    ingest(conn, clock, creds, [s, sale(creds, 2, "C00001", 1200, clock.now_ms())])
    home = app.config["HOME"]
    out = CliRunner().invoke(
        main,
        ["--home", home, "payment-totals", "--canteen", "C01", "--from", "2026-01-01", "--to", "2026-02-01"],
    )
    assert out.exit_code == 0, out.output
    assert "数字人民币 e-CNY" in out.output and "¥15.00" in out.output and "合计 total ¥27.00" in out.output
    data = json.loads(
        CliRunner()
        .invoke(
            main, ["--home", home, "payment-totals", "--from", "2026-01-01", "--to", "2026-02-01", "--json"]
        )
        .stdout
    )
    assert data["methods"]["ecny"] == {"count": 1, "amount_fen": 1500}
    bad = CliRunner().invoke(
        main, ["--home", home, "payment-totals", "--from", "yesterday", "--to", "2026-02-01"]
    )
    assert bad.exit_code == 2 and "invalid_input" in bad.output
