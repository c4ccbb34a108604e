"""A revoked terminal is refused everywhere at once: its new sales through the real ingest
worker (rejected ``terminal_revoked``, logged, nothing applied, not quarantined), its
status, and its signed HTTP requests (401 ``terminal_revoked``). Its sales dated before the
revocation were made while it was trusted and still apply."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.infra.auth import terminal_request_signature
from server.infra.db import write_txn
from server.registry import terminals
from server.registry.terminals import TerminalCredentials
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.protocol import Ack, Sale, SaleResult, Status, open_envelope, seal_hmac, topics
from tests.helpers import populated, sale, signed_batch, terminal


class Till:
    """One provisioned terminal talking to the real ingest worker (no broker)."""

    def __init__(self, conn: sqlite3.Connection, clock: FakeClock, public_key: str) -> None:
        self.conn, self.clock = conn, clock
        self.card = populated(conn, clock.now_ms()).diners[0].card_id
        self.creds: TerminalCredentials = terminal(conn, "C01", clock.now_ms(), public_key)
        self.acks: list[Ack] = []
        self.worker = IngestWorker(conn, clock, self._collect)
        self.seq = 0

    def _collect(self, topic: str, payload: bytes, retain: bool) -> bool:
        secret = bytes.fromhex(self.creds.secret_hex)
        self.acks.append(Ack.from_body(open_envelope(payload, secret_for=lambda _s: secret).body))
        return True

    def new(self, amount_fen: int, at_ms: int) -> Sale:
        self.seq += 1
        return sale(self.creds, self.seq, self.card, amount_fen, at_ms)

    def send(self, *sales: Sale) -> list[SaleResult]:
        wire = signed_batch(self.creds, list(sales), self.clock.now_ms())
        self.worker.process([(topics.sales(self.creds.terminal_id), wire)])
        return list(self.acks[-1].results)

    def revoke(self) -> int:
        at = self.clock.now_ms()
        with write_txn(self.conn):
            terminals.revoke(self.conn, self.creds.terminal_id, at)
        return at

    def balances(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT id, balance_fen FROM accounts")}

    def sale_txns(self) -> int:
        return self.conn.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0]


@pytest.fixture
def till(app: Flask, conn: sqlite3.Connection, clock: FakeClock) -> Till:
    return Till(conn, clock, app.extensions["canteen_server_key"].public_hex)


def test_a_revoked_terminals_new_sale_is_refused_with_a_code_and_nothing_applied(
    till: Till, caplog: pytest.LogCaptureFixture
) -> None:
    [ok] = till.send(till.new(300, till.clock.now_ms()))
    assert ok.status == "applied"
    revoked_at = till.revoke()
    assert terminals.revoked_at(till.conn, till.creds.terminal_id) == revoked_at
    till.clock.advance_ms(1_000)
    before, txns = till.balances(), till.sale_txns()
    caplog.set_level(logging.WARNING, logger="server.sales.ingest")
    stolen = till.new(450, till.clock.now_ms())
    [r] = till.send(stolen)
    assert (r.status, r.reason, r.quarantined) == ("rejected", "terminal_revoked", False)
    assert till.balances() == before and till.sale_txns() == txns  # no purse, no payable, no txn
    assert till.conn.execute("SELECT count(*) FROM quarantined_sales").fetchone()[0] == 0
    row = till.conn.execute("SELECT status, reason FROM sales WHERE uuid = ?", (stolen.uuid,)).fetchone()
    assert tuple(row) == ("rejected", "terminal_revoked")
    assert "terminal_revoked" in caplog.text and stolen.sale_id in caplog.text
    # a copy stays refused: the first decision is kept
    [again] = till.send(stolen)
    assert (again.status, again.reason) == ("duplicate", "terminal_revoked")
    assert till.balances() == before


def test_a_sale_dated_before_the_revocation_still_applies(till: Till) -> None:
    made_earlier = till.new(300, till.clock.now_ms())  # sold while trusted, still in the outbox
    till.clock.advance_ms(60_000)
    till.revoke()
    till.clock.advance_ms(60_000)
    txns = till.sale_txns()
    earlier, later = till.send(made_earlier, till.new(200, till.clock.now_ms()))
    assert earlier.status == "applied" and till.sale_txns() == txns + 1
    assert (later.status, later.reason) == ("rejected", "terminal_revoked")


def test_a_revoked_terminals_status_is_refused(till: Till) -> None:
    till.revoke()
    status = Status(state="online", watermark_ms=till.clock.now_ms(), pending=0)
    wire = seal_hmac(
        "status",
        till.creds.terminal_id,
        status.to_body(),
        bytes.fromhex(till.creds.secret_hex),
        till.clock.now_ms(),
    )
    till.worker.process([(topics.status(till.creds.terminal_id), wire)])
    assert till.acks[-1].reason == "terminal_revoked"
    reasons = [r[0] for r in till.conn.execute("SELECT reason FROM rejections")]
    assert reasons == ["terminal_revoked"]
    row = till.conn.execute(
        "SELECT state, watermark_ms FROM terminals WHERE id = ?", (till.creds.terminal_id,)
    ).fetchone()
    assert tuple(row) == ("revoked", None)


def _signed(creds: TerminalCredentials, at_ms: int, path: str, nonce: str) -> dict[str, str]:
    sig = terminal_request_signature(
        bytes.fromhex(creds.secret_hex), creds.terminal_id, at_ms, nonce, "GET", path
    )
    return {
        "X-Terminal-Id": creds.terminal_id,
        "X-Terminal-Time": str(at_ms),
        "X-Terminal-Nonce": nonce,
        "X-Terminal-Sig": sig,
    }


def test_a_revoked_terminals_snapshot_request_gets_401(till: Till, client: FlaskClient) -> None:
    path = f"/api/v1/terminals/{till.creds.terminal_id}/snapshot"
    assert (
        client.get(path, headers=_signed(till.creds, till.clock.now_ms(), path, "a" * 32)).status_code == 200
    )
    till.revoke()
    refused = client.get(path, headers=_signed(till.creds, till.clock.now_ms(), path, "b" * 32))
    assert refused.status_code == 401 and refused.get_json()["code"] == "terminal_revoked"
