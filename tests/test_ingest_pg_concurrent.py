"""Two ingest workers on one PostgreSQL database at once (issue 16, scale-out).

On PostgreSQL ingest transactions share the write lock (``server.infra.db.ingest_txn``) and
serialize only what they would race on: per-terminal, per-cardholder and per-credential locks
taken up front, and a tail lock for the writes they all share (payables, sums, counters, the
delta and its version). Here two workers, each on its own connection and thread, apply
interleaved sales of the **same** cardholders from different terminals, some messages sent
to both (a resend racing its original). Whatever the interleaving: each sale applied once,
the subsidy split as if the sales came one at a time (never more than was allocated), the
ledger balanced, the delta versions gapless and every stamped balance the holder's balance at
that version.

Run on the suite's PostgreSQL, or on one started for it (``pg_admin_url``)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import groupby

import pytest

from server.closing.check import all_violations
from server.infra import db as dbm
from server.infra import pg
from server.infra.db import open_db
from server.sales.ingest import IngestWorker, Message
from shared.clock import FakeClock, ms_from_china
from shared.protocol import Ack, open_envelope, topics
from tests.helpers import sale, signed_batch, terminal
from tests.money_world import MoneyWorld

DINERS = 6
ROUNDS = 40  # messages per terminal
TOPUP_FEN = 4_000
AMOUNT_FEN = 1_100  # DINERS' sales of ROUNDS × 4 terminals / DINERS each: past subsidy and self purse
ALLOCATED = {"U01": 30_000, "U02": 24_000}  # MoneyWorld's units, per person per quarter


@pytest.fixture
def url(pg_admin_url: str) -> Iterator[str]:
    name = f"canteen_conc_{uuid.uuid4().hex[:10]}"
    admin = pg.connect(pg_admin_url, pooled=False)
    admin.execute(f"CREATE DATABASE {name}")
    url = pg_admin_url.rsplit("/", 1)[0] + "/" + name
    yield url
    pg.close_pools(url)
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


class _Worker:
    """An ingest worker on its own connection, fed from its own thread; a transaction that
    fails is sent again, as a terminal resends what was not acknowledged."""

    def __init__(self, url: str, clock: FakeClock, secrets: dict[str, bytes]) -> None:
        self.acks: list[Ack] = []
        self.failures = 0
        self._secrets = secrets
        self.worker = IngestWorker(dbm.connect(url), clock, self._publish)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> bool:
        terminal_id = topic.split("/")[-3]
        env = open_envelope(payload, secret_for=lambda _s: self._secrets[terminal_id])
        self.acks.append(Ack.from_body(env.body))
        return True

    def run(self, groups: list[list[Message]], start: threading.Barrier) -> None:
        start.wait()
        for group in groups:
            for _ in range(5):
                try:
                    self.worker.process(group)
                    break
                except sqlite3.Error:
                    self.failures += 1
            else:
                raise AssertionError("a transaction failed five times")


def test_two_workers_apply_sales_of_the_same_holders_once_and_in_order(url: str) -> None:
    clock = FakeClock(ms_from_china("2026-11-26T11:45"))
    conn = open_db(url)
    w = MoneyWorld(conn, clock, diners=DINERS)
    for unit in ALLOCATED:
        w.allocate(unit, "2026Q4")
    cards = [f"K{i:03d}" for i in range(1, DINERS + 1)]
    for card in cards:
        w.topup(card, TOPUP_FEN)
    # two terminals per canteen, every one selling to every diner
    terms = [*w.terminals.values()] + [terminal(conn, c, clock.now_ms() - 86_400_000) for c in ("C01", "C02")]
    secrets = {t.terminal_id: bytes.fromhex(t.secret_hex) for t in terms}
    sold: dict[tuple[str, int], str] = {}  # sale key → card
    messages: list[Message] = []
    for r in range(ROUNDS):
        for i, t in enumerate(terms):
            s = sale(t, r + 1, cards[(r + i) % DINERS], AMOUNT_FEN, clock.now_ms() - 1_000 * (ROUNDS - r))
            sold[(t.terminal_id, s.seq)] = s.card_id
            messages.append((topics.sales(t.terminal_id), signed_batch(t, [s], clock.now_ms())))
    # interleaved: message i to worker i % 2, every fifth to both (a resend racing it)
    shares: list[list[Message]] = [[], []]
    for i, m in enumerate(messages):
        shares[i % 2].append(m)
        if i % 5 == 0:
            shares[1 - i % 2].append(m)
    workers = [_Worker(url, clock, secrets) for _ in range(2)]
    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=wk.run, args=([share[j : j + 2] for j in range(0, len(share), 2)], start))
        for wk, share in zip(workers, shares, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)

    # each sale applied once: one "applied" ack, any other copy "duplicate"
    statuses: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    for wk in workers:
        for ack in wk.acks:
            for res in ack.results:
                statuses[(res.terminal_id, res.seq)][res.status] += 1
    assert set(statuses) == set(sold)
    assert all(c["applied"] == 1 and set(c) <= {"applied", "duplicate"} for c in statuses.values()), statuses
    assert conn.execute("SELECT count(*) FROM sales WHERE status = 'applied'").fetchone()[0] == len(sold)
    assert conn.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0] == len(sold)
    assert all_violations(conn) == []  # ledger sums to zero, balances = entries, sums = sales
    # each canteen's payable (moved under the tail lock, its entries written before it, the
    # account created by whichever worker sold there first) holds exactly its sales
    owed = dict(
        conn.execute(
            "SELECT canteen_id, sum(amount_fen) FROM sales WHERE status = 'applied' GROUP BY canteen_id"
        ).fetchall()
    )
    payables = dict(
        conn.execute("SELECT id, balance_fen FROM accounts WHERE id LIKE 'canteen:%:payable'").fetchall()
    )
    assert payables == {f"canteen:{c}:payable": fen for c, fen in owed.items()}

    # the split as if one sale at a time: subsidy never paid beyond the allocation
    per_holder = conn.execute(
        "SELECT holder_id, unit_id, sum(amount_fen), sum(subsidy_fen), sum(self_fen), sum(overdraft_fen) "
        "FROM sales WHERE status = 'applied' GROUP BY holder_id, unit_id"
    ).fetchall()
    assert len(per_holder) == DINERS
    for holder, unit, total, subsidy, self_, overdraft in per_holder:
        allocated = ALLOCATED[unit]
        assert subsidy == min(allocated, total), holder
        assert self_ == total - subsidy
        assert overdraft == max(0, total - allocated - TOPUP_FEN), holder
    lowest = conn.execute("SELECT min(balance_fen) FROM accounts WHERE id LIKE '%:subsidy:%'").fetchone()[0]
    assert lowest >= 0

    # versions gapless, and each stamp the holder's balance after that version's sales
    versions = [r[0] for r in conn.execute("SELECT version FROM deltas ORDER BY version")]
    assert versions == list(range(1, len(versions) + 1))
    rows = conn.execute(
        "SELECT holder_id, unit_id, balance_version, amount_fen, balance_subsidy_fen + balance_self_fen "
        "FROM sales WHERE status = 'applied' ORDER BY holder_id, balance_version"
    ).fetchall()
    for (holder, unit), of_holder in groupby(rows, key=lambda r: (r[0], r[1])):
        balance = ALLOCATED[unit] + TOPUP_FEN
        for version, in_version in groupby(of_holder, key=lambda r: r[2]):
            in_version = list(in_version)
            assert version in versions
            balance -= sum(r[3] for r in in_version)
            assert {r[4] for r in in_version} == {balance}, (holder, version)
    # with the locks nothing had to be resent: no deadlock, no key collision between them
    assert [wk.failures for wk in workers] == [0, 0]
    conn.close()
