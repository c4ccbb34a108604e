"""Operations benchmarks.

* ``ops.backup_1m_sales_s`` — ``canteen-server backup`` (a separate process at ``nice 10``,
  as the systemd timer runs it) of a database holding 1,000,000 sales with their ledger txns and entries,
  while the server's ingest worker keeps applying sales in this process: from the moment the
  backup's snapshot is taken to the moment the command exits (the copy in steps with pauses,
  SQLite's quick_check of the copy, the per-terminal marks, SHA-256, the signed manifest,
  fsyncs, the row recording it). Its params say how long the copy itself took, the size, and
  the ingest rate during the backup against the rate without it (measured before and after,
  the mean), which is also ``ops.backup_ingest_ratio``.

The 1,000,000 sales are written in bulk SQL straight into ``sales``, ``txns`` and
``entries`` (``bench.bench_server._history``: a quarter's history, funded by an allocation),
not through MQTT and ingest — that would take the better part of an hour and measure ingest,
not backup. Ingest runs on one-sale messages signed beforehand, grouped into transactions
the way the worker takes them off its queue (``IngestWorker.groups``), every commit fsynced;
the rate is sales applied per second of wall clock in the window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.bench_server import _city, _history
from bench.run import Context, Result
from server.infra.db import open_db, write_txn
from server.infra.keys import load_or_create
from server.registry import funds
from server.registry.terminals import provision
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.protocol import Sale, SaleBatch, seal_hmac, topics

ROOT = Path(__file__).resolve().parent.parent
QUARTER = "2026Q1"
BACKUP_NICE = 10  # deploy/systemd/canteen-backup.service: Nice=10


def _messages(creds: list, seq: list[int], n: int, holders: int, now: int) -> list[tuple[str, bytes]]:  # noqa: ANN001
    out = []
    for m in range(n):
        t = m % len(creds)
        c = creds[t]
        seq[t] += 1
        sale = Sale(
            c.terminal_id,
            seq[t],
            uuid.uuid4().hex,
            f"K{(m * 7919) % holders:06d}",
            c.canteen_id,
            1200,
            now,
            meal_period="lunch",
            subsidy_fen=1200,
        )
        body = SaleBatch((sale,)).to_body()
        out.append(
            (
                topics.sales(c.terminal_id),
                seal_hmac("sale_batch", c.terminal_id, body, bytes.fromhex(c.secret_hex), now),
            )
        )
    return out


class _Ingest:
    """The ingest worker applying prepared messages in a thread, sampling (time, applied)."""

    def __init__(self, worker: IngestWorker) -> None:
        self.worker = worker
        self.messages: list[tuple[str, bytes]] = []
        self._next = 0
        self.ran_out = False
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.samples.append((time.time(), self.worker.stats.applied))
        while not self._stop.is_set():
            group = self.messages[self._next : self._next + self.worker.max_messages]
            if len(group) < self.worker.max_messages:
                self.ran_out = True
                return
            self._next += len(group)
            self.worker.process(group)
            self.samples.append((time.time(), self.worker.stats.applied))

    def run_for(self, seconds: float) -> float:
        """Ingest for ``seconds``; the rate in sales/s."""
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()
        time.sleep(seconds)
        self.stop()
        return self.rate(self.samples[0][0], self.samples[-1][0])

    def start(self) -> None:
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def rate(self, t0: float, t1: float) -> float:
        """Sales applied per second between t0 and t1 (interpolated between samples)."""

        def applied_at(t: float) -> float:
            s = self.samples
            for (ta, a), (tb, b) in zip(s, s[1:], strict=False):
                if ta <= t <= tb:
                    return a + (b - a) * (t - ta) / ((tb - ta) or 1)
            return s[0][1] if t < s[0][0] else s[-1][1]

        return (applied_at(t1) - applied_at(t0)) / (t1 - t0)


def ops_backup_1m(
    ctx: Context, n: int = 1_000_000, terminals: int = 200, holders: int = 20_000, baseline_s: float = 6.0
) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        db_path = home / "server" / "canteen.sqlite"
        db_path.parent.mkdir(parents=True)
        key = load_or_create(home / "server" / "server_key.hex")
        conn = open_db(db_path)
        clock = FakeClock(ms_from_china("2026-01-06T11:45"))
        now = clock.now_ms()
        t0 = time.perf_counter()
        _city(conn, canteens=100, units=60, holders=holders, now_ms=now)
        _history(conn, n, holders, units=60)  # bulk SQL, see the module doc
        with write_txn(conn):
            for u in range(60):
                funds.allocate(conn, f"U{u:03d}", QUARTER, None, now)
            creds = [
                provision(conn, f"C{t % 100:03d}", now, key.public_hex, f"T{t:03d}") for t in range(terminals)
            ]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        generate_s = time.perf_counter() - t0
        db_mb = db_path.stat().st_size / 1e6
        seq = [0] * terminals
        worker = IngestWorker(conn, clock, lambda _t, _p, _r: True)
        ingest = _Ingest(worker)
        ingest.messages += _messages(creds, seq, 40_000, holders, now)
        before = ingest.run_for(baseline_s)
        # enough prepared for a backup of up to two minutes, and the second baseline
        ingest.messages += _messages(creds, seq, min(int(before * (120 + baseline_s)), 600_000), holders, now)
        ingest.start()
        time.sleep(1.0)
        t_launch = time.time()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from server.cli import main; main()",
                "--home",
                str(home),
                "backup",
                str(Path(tmp) / "backups"),
                "--json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=1800,
            preexec_fn=lambda: os.nice(BACKUP_NICE),  # noqa: PLW1509 — as the unit runs it
        )
        t_exit = time.time()
        time.sleep(0.5)
        ingest.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"backup failed: {proc.stderr}")
        manifest = json.loads(proc.stdout)["manifest"]
        t_snapshot = manifest["taken_at_ms"] / 1000
        during = ingest.rate(t_snapshot, t_exit)
        after = ingest.run_for(baseline_s)
        without = (before + after) / 2
        conn.close()
    if ingest.ran_out:
        raise RuntimeError("the benchmark ran out of prepared sales: its rates would be wrong")
    ratio = round(during / without, 2)
    params = {
        "sales": manifest["sales"],
        "db_mb": round(db_mb),
        "copy_s": round(manifest["copy_ms"] / 1000, 2),
        "copy_steps": manifest["copy_steps"],
        "check_s": round(manifest["check_ms"] / 1000, 2),
        "hash_s": round(manifest["hash_ms"] / 1000, 2),
        "nice": BACKUP_NICE,
        "pages_per_step": 1024,
        "pause_ms": 2,
        "command_start_s": round(t_snapshot - t_launch, 1),
        "ingest_during_per_s": round(during),
        "ingest_without_per_s": round(without),
        "ingest_before_after_per_s": [round(before), round(after)],
        "sales_per_message": 1,
        "history_generate_s": round(generate_s, 1),
    }
    return [
        Result("ops.backup_1m_sales_s", round(t_exit - t_snapshot, 2), "s", params),
        Result("ops.backup_ingest_ratio", ratio, "×", dict(params)),
    ]


BENCHMARKS = [ops_backup_1m]
