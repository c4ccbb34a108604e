"""``sync.drain_10k_s``: 10,000 unsent sales drained after a reconnect.

A terminal has 10,000 journaled, announced, unsent sales (it sold offline). It starts and
connects: the clock from ``Terminal.start()`` runs until its outbox is empty — every sale
sent in signed batches through the real broker (``ctx.broker``: Mosquitto when installed,
the same broker ``broker.raw_qos1_msgs_per_s`` measures in this run), applied by the real
server's ingest worker to the ledger, committed, acknowledged, and settled in the
terminal's journal. The setup (server, 300 cardholders, the terminal's first snapshot)
is not timed.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path

from bench.run import Context, Result
from server.infra.db import open_db, write_txn
from server.registry.terminals import provision
from server.service import ServerService
from shared.clock import SystemClock
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from terminal.agent import Terminal
from terminal.config import TerminalConfig
from terminal.store import Store


def sync_drain(
    ctx: Context, sales: int = 10_000, batch_size: int | None = None, window: int | None = None
) -> list[Result]:
    """``batch_size``/``window`` default to the terminal config's defaults."""
    batch_size = batch_size or TerminalConfig.batch_size
    window = window or TerminalConfig.window
    rng = random.Random(5)
    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    service = ServerService(
        ctx.broker.url, config={"HOME": str(workdir / "server")}, client_id="bench-sync-server"
    ).start()
    clock = SystemClock()
    try:
        db = open_db(service.app.config["DATABASE"])
        world = demo_world(db, clock.now_ms(), diners=300)
        with write_txn(db):
            creds = provision(
                db,
                "C01",
                clock.now_ms(),
                service.app.extensions["canteen_server_key"].public_hex,
                terminal_id=f"bench-{time.time_ns() % 10**9}",
            )
        config = TerminalConfig.from_dict(
            {
                **creds.to_json(),
                "broker_url": ctx.broker.url,
                "server_url": service.base_url,
                "db_path": str(workdir / "terminal.sqlite"),
                "batch_size": batch_size,
                "window": window,
                "ack_timeout_s": 30.0,
                "heartbeat_s": 5.0,
            }
        )
        first = Terminal(config, clock).start()  # the first snapshot, not timed
        assert wait_until(lambda: first.sync.in_sync, 30), "terminal did not sync"
        first.stop()

        store = Store(config.db_path)  # the offline morning: sales journaled, never sent
        store.conn.execute("PRAGMA synchronous=OFF")
        start = clock.now_ms() - sales * 1000
        for i in range(sales):
            d = rng.choice(world.diners)
            store.record_sale(
                terminal_id=config.terminal_id,
                canteen_id="C01",
                card_id=d.card_id,
                holder_id=d.holder_id,
                amount_fen=(amount := rng.randint(100, 900)),
                subsidy_fen=amount,
                self_fen=0,
                occurred_at_ms=start + i * 1000,
                kind="shop",
                offline=True,
                announced=True,
            )
        store.close()

        t0 = time.perf_counter()
        term = Terminal(config, clock).start()
        drained = wait_until(lambda: term.store.pending_count() == 0, 120, interval_s=0.01)
        elapsed = time.perf_counter() - t0
        stats = term.sync.stats
        term.stop()
        applied = db.execute(
            "SELECT count(*) FROM sales WHERE terminal_id = ? AND status = 'applied'", (config.terminal_id,)
        ).fetchone()[0]
        db.close()
        if not drained or applied != sales:
            raise RuntimeError(f"drain incomplete: applied {applied} of {sales}")
        return [
            Result(
                "sync.drain_10k_s",
                round(elapsed, 2),
                "s",
                {
                    "sales": sales,
                    "batch_size": batch_size,
                    "window": window,
                    "broker": ctx.broker.kind,
                    "batches": stats.batches_sent,
                    "resends": stats.resends,
                },
                target="< 5 s",
            )
        ]
    finally:
        service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


BENCHMARKS = [sync_drain]
