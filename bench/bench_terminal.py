"""Terminal benchmarks: the authorization decision and the durable journal.

* ``terminal.authorize_p50_ms`` / ``terminal.authorize_p99_ms`` — :meth:`Terminal.decide`
  for a random card among 50,000 cached cardholders: the cache lookups (card, holder, this
  terminal's unconfirmed sales, meals taken today) plus the pure rules, no device time and
  no journal write. The journal holds a morning's sales (some still unsent) so the lookups
  run against a realistic table. Meal and shop taps mixed.
* ``terminal.journal_commits_per_s`` — approved sales journaled one transaction each
  (journal row + outbox row, ``synchronous=FULL``, WAL) on the machine's disk, plus the
  relaxed "announced" mark that follows every sale.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path

from bench.run import Context, Result
from shared.clock import FakeClock, ms_from_china
from shared.protocol.messages import decode_changes
from terminal.agent import Terminal
from terminal.authorize import TapRequest
from terminal.config import TerminalConfig
from terminal.store import Store

HOLDERS = 50_000
CANTEEN = {
    "unit_id": "U0001",
    "meals": {
        "breakfast": {"start": "07:00", "end": "09:00", "price_fen": 500},
        "lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200, "visitor_price_fen": 1500},
        "dinner": {"start": "17:30", "end": "19:30", "price_fen": 1000},
    },
    "items": {
        f"sku{i}": {"name": f"商品{i}", "price_fen": 100 + i, "reference_price_fen": 200 + i}
        for i in range(200)
    },
}


def _config(workdir: Path) -> TerminalConfig:
    return TerminalConfig(
        "TB",
        "C0001",
        "00" * 32,
        "00" * 32,
        "mqtt://127.0.0.1:1",
        "http://127.0.0.1:1",
        db_path=str(workdir / "terminal.sqlite"),
    )


def _populate(store: Store, rng: random.Random) -> None:
    changes: list[dict] = [
        {"kind": "settings", "config": {}},
        {"kind": "canteen", "canteen_id": "C0001", "config": CANTEEN},
    ]
    for i in range(HOLDERS):
        changes.append(
            {
                "kind": "holder",
                "holder_id": f"H{i:06d}",
                "unit_id": f"U{i % 40:04d}",
                "subsidy_fen": rng.randint(0, 60_000),
                "self_fen": rng.randint(0, 20_000),
                "blocked": i % 997 == 0,
            }
        )
        changes.append(
            {
                "kind": "card",
                "card_id": f"C{i:06d}",
                "holder_id": f"H{i:06d}",
                "status": "lost" if i % 1009 == 0 else "active",
            }
        )
    store.apply_changes(1, decode_changes(tuple(changes)), snapshot=True)


def terminal_authorize(ctx: Context, taps: int = 20_000, journaled: int = 3_000) -> list[Result]:
    rng = random.Random(1)
    workdir = Path(tempfile.mkdtemp(prefix="bench-terminal-"))
    try:
        clock = FakeClock(ms_from_china("2026-01-06T11:30"))
        term = Terminal(_config(workdir), clock)
        _populate(term.store, rng)
        term.sync.assume(in_sync=True)
        term.store.conn.execute("PRAGMA synchronous=OFF")  # setup only: a morning of sales
        for _ in range(journaled):
            clock.advance_ms(1000)
            card = f"C{rng.randrange(HOLDERS):06d}"
            term.tap(
                TapRequest(card)
                if rng.random() < 0.5
                else TapRequest(card, kind="shop", amount_fen=rng.randint(100, 900))
            )
        term.store.conn.execute(
            "UPDATE journal SET status = 'applied' "
            "WHERE seq IN (SELECT seq FROM journal ORDER BY seq LIMIT ?)",
            (journaled * 9 // 10,),
        )
        term.store.conn.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM journal WHERE status = 'applied')"
        )
        term.store.conn.execute("PRAGMA synchronous=FULL")
        requests = [
            TapRequest(f"C{rng.randrange(HOLDERS):06d}")
            if rng.random() < 0.7
            else TapRequest(
                f"C{rng.randrange(HOLDERS):06d}",
                kind="shop",
                items=((f"sku{rng.randrange(200)}", rng.randint(1, 3)),),
            )
            for _ in range(taps)
        ]
        for r in requests[:500]:  # warm the page cache and the rules cache
            term.decide(r)
        samples = []
        approved = 0
        for r in requests:
            t0 = time.perf_counter_ns()
            decision = term.decide(r)[0]
            samples.append(time.perf_counter_ns() - t0)
            approved += decision.approved
        samples.sort()
        p50 = samples[len(samples) // 2] / 1e6
        p99 = samples[int(len(samples) * 0.99)] / 1e6
        params = {"holders": HOLDERS, "taps": taps, "journal_rows": journaled, "approved": approved}
        term.store.close()
        term.sync.store.close()
        return [
            Result("terminal.authorize_p50_ms", round(p50, 3), "ms", params),
            Result("terminal.authorize_p99_ms", round(p99, 3), "ms", params, target="< 5 ms"),
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def terminal_journal(ctx: Context, sales: int = 2_000) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=str(Path.cwd())))
    try:
        store = Store(workdir / "journal.sqlite")
        t0 = time.perf_counter()
        for i in range(sales):
            sale = store.record_sale(
                terminal_id="TB",
                canteen_id="C0001",
                card_id=f"C{i:06d}",
                holder_id=f"H{i:06d}",
                amount_fen=1200,
                subsidy_fen=1200,
                self_fen=0,
                occurred_at_ms=1_767_672_000_000 + i,
                meal_period="lunch",
            )
            store.mark_announced(sale.seq)
        elapsed = time.perf_counter() - t0
        store.close()
        return [
            Result(
                "terminal.journal_commits_per_s",
                round(sales / elapsed),
                "sales/s",
                {"sales": sales, "synchronous": "FULL", "journal_mode": "WAL"},
            )
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


BENCHMARKS = [terminal_authorize, terminal_journal]
