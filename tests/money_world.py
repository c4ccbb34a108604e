"""A small city for the money tests: two units, two canteens, terminals, and a way to sell
through the real ingest path (signed batch → IngestWorker.process → ack)."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from server.infra.db import write_txn
from server.registry import funds
from server.registry import units as registry
from server.registry.terminals import TerminalCredentials
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.protocol import Ack, Sale, SaleResult, Status, open_envelope, seal_hmac, topics
from simulator.harness.world import meal
from tests.helpers import sale as make_sale
from tests.helpers import signed_batch, terminal

OPERATOR = "湘味餐饮有限公司"
SELF_OPERATOR = "市教育局机关服务中心"


class MoneyWorld:
    """Units U01 (¥300/quarter) and U02 (¥240/quarter); canteen C01 (U01, run by an outside
    operator) and C02 (U02, self-operated); ``diners`` holders H001… alternating units,
    cards K001…; one terminal per canteen."""

    def __init__(self, conn: sqlite3.Connection, clock: FakeClock, diners: int = 4) -> None:
        self.conn = conn
        self.clock = clock
        now = clock.now_ms()
        with write_txn(conn):
            registry.add_unit(conn, "U01", "市财政局", 30_000)
            registry.add_unit(conn, "U02", "市教育局", 24_000)
            c01_meals = {"breakfast": meal("07:00", "09:00", 500), "lunch": meal("11:30", "13:30", 1200)}
            registry.add_canteen(
                conn, "C01", "财政局食堂", "U01", operator=OPERATOR, now_ms=now, config={"meals": c01_meals}
            )
            registry.add_canteen(
                conn,
                "C02",
                "教育局食堂",
                "U02",
                operator=SELF_OPERATOR,
                self_operated=True,
                now_ms=now,
                config={"meals": {"lunch": meal("11:30", "13:30", 1000)}},
            )
            for i in range(1, diners + 1):
                unit = "U01" if i % 2 else "U02"
                registry.add_holder(conn, f"H{i:03d}", unit, f"职工{i}", f"K{i:03d}", now_ms=now)
            # generous limits: these tests sell any amount, plausibility has its own tests
            # (tests/test_quarantine.py)
            registry.set_terminal_settings(conn, {"risk": {"max_sale_fen": 10_000_000}}, now)
        # provisioned long ago: the tests date sales back into earlier quarters and years
        self.terminals = {c: terminal(conn, c, now - 5 * 366 * 86_400_000) for c in ("C01", "C02")}
        self.seq = {c: 0 for c in self.terminals}
        self.acks: list[Ack] = []
        self.worker = IngestWorker(conn, clock, self._collect)

    def _collect(self, topic: str, payload: bytes, retain: bool) -> bool:
        creds = next((c for c in self.terminals.values() if topic == topics.ack(c.terminal_id)), None)
        assert creds is not None, topic
        env = open_envelope(payload, secret_for=lambda _s: bytes.fromhex(creds.secret_hex))
        self.acks.append(Ack.from_body(env.body))
        return True

    def allocate(self, unit: str, quarter: str, per_person_fen: int | None = None) -> dict[str, Any]:
        with write_txn(self.conn):
            return funds.allocate(self.conn, unit, quarter, per_person_fen, self.clock.now_ms())

    def topup(self, card: str, amount_fen: int) -> int:
        with write_txn(self.conn):
            return funds.topup(self.conn, card, amount_fen, self.clock.now_ms())

    def new_sale(
        self, card: str, amount_fen: int, at_ms: int | None = None, canteen: str = "C01", **kw: object
    ) -> Sale:
        self.seq[canteen] += 1
        at = self.clock.now_ms() if at_ms is None else at_ms
        return make_sale(self.terminals[canteen], self.seq[canteen], card, amount_fen, at, **kw)

    def send(self, *sales: Sale) -> list[SaleResult]:
        creds = self.terminals[sales[0].canteen_id]
        wire = signed_batch(creds, list(sales), self.clock.now_ms())
        self.worker.process([(topics.sales(creds.terminal_id), wire)])
        return list(self.acks[-1].results)

    def sell(
        self, card: str, amount_fen: int, at_ms: int | None = None, canteen: str = "C01", **kw: object
    ) -> SaleResult:
        return self.send(self.new_sale(card, amount_fen, at_ms, canteen, **kw))[0]

    def report_watermark(self, canteen: str, watermark_ms: int) -> None:
        creds: TerminalCredentials = self.terminals[canteen]
        status = Status(state="online", watermark_ms=watermark_ms, clock_ms=self.clock.now_ms())
        wire = seal_hmac(
            "status",
            creds.terminal_id,
            status.to_body(),
            bytes.fromhex(creds.secret_hex),
            self.clock.now_ms(),
            uuid.uuid4().hex,
        )
        self.worker.process([(topics.status(creds.terminal_id), wire)])

    def all_report(self, watermark_ms: int) -> None:
        for c in self.terminals:
            self.report_watermark(c, watermark_ms)
