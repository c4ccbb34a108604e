"""The server's ingest worker driven straight, without a broker: demo_world, one terminal
at C01, and what the worker answered (the tests of quarantine and reversals build on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.infra.db import open_db
from server.registry.terminals import TerminalCredentials
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.protocol import Ack, ReversalAck, Sale, SaleResult, open_envelope, topics
from simulator.harness.world import World, demo_world
from tests.helpers import sale, signed_batch, terminal

NOON = "2026-11-26T12:00"  # lunch: ¥12.00 own staff, ¥15.00 visitors at C01 (U01)


class IngestCity:
    """demo_world, one terminal at C01 and the real ingest worker (no broker); the worker's
    sale and reversal acknowledgements collected."""

    def __init__(self, path: Path) -> None:
        self.clock = FakeClock(ms_from_china(NOON))
        self.conn = open_db(path)
        self.world: World = demo_world(self.conn, self.clock.now_ms(), diners=6)
        self.creds: TerminalCredentials = terminal(self.conn, "C01", self.clock.now_ms())
        self.acks: list[Ack] = []
        self.reversal_acks: list[ReversalAck] = []
        self.worker = IngestWorker(self.conn, self.clock, self._collect)
        self.seq = 0

    def _collect(self, topic: str, payload: bytes, retain: bool) -> bool:
        secret = bytes.fromhex(self.creds.secret_hex)
        env = open_envelope(payload, secret_for=lambda _s: secret)
        if env.type == "reversal_ack":
            self.reversal_acks.append(ReversalAck.from_body(env.body))
        else:
            self.acks.append(Ack.from_body(env.body))
        return True

    def card(self, unit: str = "U01") -> str:
        """The card of the first diner of ``unit``."""
        return next(d.card_id for d in self.world.diners if d.unit_id == unit)

    def holder(self, card: str) -> str:
        return self.conn.execute("SELECT holder_id FROM cards WHERE card_id = ?", (card,)).fetchone()[0]

    def new_sale(self, card: str | None, amount_fen: int, **kw: Any) -> Sale:
        """The terminal's next sale (``at_ms``: when, else now)."""
        self.seq += 1
        return sale(self.creds, self.seq, card, amount_fen, kw.pop("at_ms", self.clock.now_ms()), **kw)

    def send(self, *sales: Sale) -> list[SaleResult]:
        """One signed batch through the worker; its results."""
        wire = signed_batch(self.creds, list(sales), self.clock.now_ms())
        self.worker.process([(topics.sales(self.creds.terminal_id), wire)])
        return list(self.acks[-1].results)
