"""QR payment credentials at the server: issuing, the phone page, snapshots, and a code
spent at two terminals (applied, recorded, reported, credential revoked)."""

from __future__ import annotations

import json
import re

import pytest

from server.downstream.deltas import deltas_since
from server.downstream.snapshot import build_snapshot
from server.infra.auth import create_token
from server.infra.db import counter, write_txn
from server.sales import qr_codes
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.paycode import make_code, parse_code, signature_ok
from shared.protocol import topics
from tests.helpers import populated, sale, signed_batch, terminal


@pytest.fixture
def world(conn, clock: FakeClock):  # noqa: ANN001, ANN201
    return populated(conn, clock.now_ms())


def token(conn, role: str, clock: FakeClock, unit_id: str | None = None) -> dict[str, str]:  # noqa: ANN001
    with write_txn(conn):
        t = create_token(conn, role, clock.now_ms(), unit_id=unit_id)
    return {"Authorization": f"Bearer {t}"}


def issue(client, conn, clock, card_id: str, **body):  # noqa: ANN001, ANN201
    r = client.post(
        "/api/v1/qr/credentials", json={"card_id": card_id, **body}, headers=token(conn, "admin", clock)
    )
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def test_issuing_a_credential_sends_its_public_key_to_terminals(client, conn, clock, world) -> None:  # noqa: ANN001
    card = world.diners[0].card_id
    cred = issue(client, conn, clock, card, offline_allowance_fen=2000, valid_days=30)
    last = deltas_since(conn, 0)[-1]
    assert last.changes == (
        {
            "kind": "qr_key",
            "holder_id": cred["holder_id"],
            "public_key": cred["public_key"],
            "expires_at_ms": clock.now_ms() + 30 * 86_400_000,
            "offline_allowance_fen": 2000,
        },
    )
    snap = [c for c in build_snapshot(conn).changes if c["kind"] == "qr_key"]
    assert [c["public_key"] for c in snap] == [cred["public_key"]]


def test_a_new_credential_replaces_the_old_everywhere(client, conn, clock, world) -> None:  # noqa: ANN001
    card = world.diners[0].card_id
    old = issue(client, conn, clock, card)
    new = issue(client, conn, clock, card)
    assert qr_codes.get(conn, old["id"]).revoked_reason == "replaced"
    assert [c["public_key"] for c in build_snapshot(conn).changes if c["kind"] == "qr_key"] == [
        new["public_key"]
    ]
    assert client.get(old["page_path"]).status_code == 410


def test_a_clerk_issues_only_for_their_own_unit(client, conn, clock, world) -> None:  # noqa: ANN001
    diner = world.diners[0]
    other_unit = next(u for u in world.units if u != diner.unit_id)
    r = client.post(
        "/api/v1/qr/credentials",
        json={"card_id": diner.card_id},
        headers=token(conn, "clerk", clock, other_unit),
    )
    assert r.status_code == 403
    r = client.post(
        "/api/v1/qr/credentials",
        json={"card_id": diner.card_id},
        headers=token(conn, "clerk", clock, diner.unit_id),
    )
    assert r.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"card_id": "NOPE"},
        {"card_id": "C00001", "valid_days": 0},
        {"card_id": "C00001", "offline_allowance_fen": 1.5},
    ],
)
def test_bad_issue_requests_change_nothing(client, conn, clock, world, body) -> None:  # noqa: ANN001
    before = conn.execute("SELECT count(*) FROM deltas").fetchone()[0]
    r = client.post("/api/v1/qr/credentials", json=body, headers=token(conn, "admin", clock))
    assert r.status_code in (400, 404)
    assert r.get_json()["code"] in ("invalid_input", "card_unknown")
    assert conn.execute("SELECT count(*) FROM deltas").fetchone()[0] == before
    assert conn.execute("SELECT count(*) FROM qr_credentials").fetchone()[0] == 0


def test_the_phone_page_shows_a_fresh_signed_code_each_time(client, conn, clock, world) -> None:  # noqa: ANN001
    cred = issue(client, conn, clock, world.diners[0].card_id)
    page = client.get(cred["page_path"])
    assert page.status_code == 200 and "<svg" in page.get_data(as_text=True)
    assert "付款码" in page.get_data(as_text=True)
    path = cred["page_path"].replace("/qr/", "/api/v1/qr/code/")
    codes = [parse_code(client.get(path).get_json()["code"]) for _ in range(2)]
    assert [c.counter for c in codes] == [2, 3]  # the page itself took 1
    assert all(signature_ok(c, cred["public_key"]) for c in codes)
    assert codes[0].time_ms == clock.now_ms() - clock.now_ms() % 1000


def test_a_wrong_page_link_shows_nothing(client, conn, clock, world) -> None:  # noqa: ANN001
    cred = issue(client, conn, clock, world.diners[0].card_id)
    assert client.get(f"/qr/{cred['id']}/{'0' * 32}").status_code == 404
    assert client.get(f"/api/v1/qr/code/{cred['id']}/{'0' * 32}").status_code == 404


# --- double spending ---------------------------------------------------------------------


def _ingest(conn, clock, *batches) -> list:  # noqa: ANN001
    """Each (terminal credentials, [sales]) signed as one batch now, all through the worker."""
    published: list = []
    worker = IngestWorker(conn, clock, lambda t, p, r: published.append((t, p)) or True)
    worker.process(
        [
            (topics.sales(creds.terminal_id), signed_batch(creds, sales, clock.now_ms()))
            for creds, sales in batches
        ]
    )
    return published


def _seed(app, cred: dict) -> bytes:  # noqa: ANN001
    """The QR credential's seed, as the server derives it."""
    return qr_codes.credential_seed(qr_codes.qr_secret(app.extensions["canteen_server_key"]), cred["id"])


def test_a_code_spent_at_two_terminals_is_applied_recorded_and_its_credential_revoked(
    app, client, conn, clock, world
) -> None:  # noqa: ANN001
    diner = world.diners[0]
    cred = issue(client, conn, clock, diner.card_id)
    seed = _seed(app, cred)
    code = make_code(seed, diner.card_id, 5, clock.now_ms())
    t1, t2 = terminal(conn, "C01", clock.now_ms()), terminal(conn, "C01", clock.now_ms())
    s1 = sale(t1, 1, diner.card_id, 1200, clock.now_ms(), method="qr", credential=code, offline=True)
    s2 = sale(t2, 1, diner.card_id, 1200, clock.now_ms(), method="qr", credential=code, offline=True)
    _ingest(conn, clock, (t1, [s1]))
    assert counter(conn, "credential_incidents") == 0
    clock.advance_ms(60_000)
    _ingest(conn, clock, (t2, [s2]))

    statuses = [r[0] for r in conn.execute("SELECT status FROM sales ORDER BY terminal_id")]
    assert statuses == ["applied", "applied"]  # both meals were served: both are on the books
    r = client.get("/api/v1/qr/incidents", headers=token(conn, "auditor", clock))
    [incident] = r.get_json()
    assert incident["kind"] == "qr_double_spent" and incident["action"] == "credential_revoked"
    assert (incident["first_sale"], incident["sale"], incident["amount_fen"]) == (
        s1.sale_id,
        s2.sale_id,
        1200,
    )
    revocation = [c for c in deltas_since(conn, 0)[-1].changes if c["kind"] == "qr_key"]
    assert revocation == [{**revocation[0], "expires_at_ms": clock.now_ms()}]
    assert qr_codes.get(conn, cred["id"]).revoked_at_ms == clock.now_ms()


def test_a_resent_sale_is_not_a_double_spend(app, client, conn, clock, world) -> None:  # noqa: ANN001
    diner = world.diners[0]
    cred = issue(client, conn, clock, diner.card_id)
    seed = _seed(app, cred)
    t1 = terminal(conn, "C01", clock.now_ms())
    s1 = sale(
        t1,
        1,
        diner.card_id,
        1200,
        clock.now_ms(),
        method="qr",
        credential=make_code(seed, diner.card_id, 1, clock.now_ms()),
    )
    for _ in range(2):
        _ingest(conn, clock, (t1, [s1]))
    assert counter(conn, "credential_incidents") == 0
    assert qr_codes.get(conn, cred["id"]).revoked_at_ms is None


def test_the_same_code_twice_in_one_batch_is_caught(app, client, conn, clock, world) -> None:  # noqa: ANN001
    diner = world.diners[0]
    cred = issue(client, conn, clock, diner.card_id)
    seed = _seed(app, cred)
    code = make_code(seed, diner.card_id, 9, clock.now_ms())
    t1, t2 = terminal(conn, "C01", clock.now_ms()), terminal(conn, "C02", clock.now_ms())
    _ingest(
        conn,
        clock,
        (t1, [sale(t1, 1, diner.card_id, 1200, clock.now_ms(), method="qr", credential=code)]),
        (t2, [sale(t2, 1, diner.card_id, 1000, clock.now_ms(), method="qr", credential=code)]),
    )
    assert counter(conn, "credential_incidents") == 1


def test_a_code_the_server_cannot_verify_is_reported(client, conn, clock, world) -> None:  # noqa: ANN001
    diner = world.diners[0]
    issue(client, conn, clock, diner.card_id)
    t1 = terminal(conn, "C01", clock.now_ms())
    forged = make_code(bytes(32), diner.card_id, 1, clock.now_ms())
    _ingest(
        conn,
        clock,
        (t1, [sale(t1, 1, diner.card_id, 1200, clock.now_ms(), method="qr", credential=forged)]),
    )
    [row] = conn.execute("SELECT kind, action FROM credential_incidents").fetchall()
    assert tuple(row) == ("qr_unverified", "reported")


def test_a_sun_counter_seen_at_two_terminals_is_reported_without_blocking_the_card(
    conn, clock, world
) -> None:  # noqa: ANN001
    diner = world.diners[0]
    t1, t2 = terminal(conn, "C01", clock.now_ms()), terminal(conn, "C01", clock.now_ms())
    cred = "sun:04A1B2C3D4E5F6:17"
    _ingest(
        conn,
        clock,
        (t1, [sale(t1, 1, diner.card_id, 1200, clock.now_ms(), credential=cred)]),
    )
    _ingest(
        conn,
        clock,
        (t2, [sale(t2, 1, diner.card_id, 1200, clock.now_ms(), credential=cred)]),
    )
    [row] = conn.execute("SELECT kind, subject, counter, action FROM credential_incidents").fetchall()
    assert tuple(row) == ("sun_replayed", "04A1B2C3D4E5F6", 17, "reported")
    assert (
        conn.execute("SELECT status FROM cards WHERE card_id = ?", (diner.card_id,)).fetchone()[0] == "active"
    )


def test_qr_cli_prints_a_code_and_saves_a_png(tmp_path, clock) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from server.cli.root import main
    from server.infra.db import open_db
    from simulator.harness.world import demo_world

    runner = CliRunner()
    assert runner.invoke(main, ["--home", str(tmp_path), "init"]).exit_code == 0
    conn = open_db(tmp_path / "server" / "canteen.sqlite")
    demo_world(conn, clock.now_ms(), diners=3)
    conn.close()
    png = tmp_path / "code.png"
    result = runner.invoke(main, ["--home", str(tmp_path), "qr", "C00001", "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert "█" in result.output and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = re.search(r"CQ1\.\S+", result.output).group(0)
    assert parse_code(code).card_id == "C00001"
    again = runner.invoke(main, ["--home", str(tmp_path), "qr", "C00001", "--png", str(png), "--json"])
    data = json.loads(again.stdout)
    assert parse_code(data["code"]).counter == parse_code(code).counter + 1  # same credential, next code
    bad = runner.invoke(main, ["--home", str(tmp_path), "qr", "NOPE", "--png", str(png)])
    assert bad.exit_code == 2 and "card_unknown" in bad.output


def test_a_diner_token_issues_and_shows_only_their_own_codes(client, conn, clock, world) -> None:  # noqa: ANN001
    me, other = world.diners[0], world.diners[1]
    with write_txn(conn):
        h = {"Authorization": f"Bearer {create_token(conn, 'diner', clock.now_ms(), holder_id=me.holder_id)}"}
    assert client.get("/api/v1/qr/my-code", headers=h).get_json()["code"] == "qr_no_credential"
    assert (
        client.post("/api/v1/qr/credentials", json={"card_id": other.card_id}, headers=h).status_code == 403
    )
    cred = client.post("/api/v1/qr/credentials", json={"card_id": me.card_id}, headers=h).get_json()
    code = parse_code(client.get("/api/v1/qr/my-code", headers=h).get_json()["code"])
    assert code.card_id == me.card_id and signature_ok(code, cred["public_key"])


def test_after_a_card_is_replaced_the_phone_names_the_new_card(client, conn, clock, world) -> None:  # noqa: ANN001
    diner = world.diners[0]
    cred = issue(client, conn, clock, diner.card_id)
    with write_txn(conn):
        conn.execute("UPDATE cards SET status = 'lost' WHERE card_id = ?", (diner.card_id,))
        conn.execute("INSERT INTO cards(card_id, holder_id) VALUES ('NEW001', ?)", (diner.holder_id,))
    path = cred["page_path"].replace("/qr/", "/api/v1/qr/code/")
    code = parse_code(client.get(path).get_json()["code"])
    assert code.card_id == "NEW001" and signature_ok(code, cred["public_key"])
