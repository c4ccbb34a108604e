"""Server money benchmarks.

* ``server.settle_5m_s`` — settling one quarter of 5,000,000 sales over 100 canteens
  (every statement computed, stored and posted to the ledger). The sales are generated with
  bulk SQL straight into the ``sales`` table (not through ingest; their ledger entries are
  summarised as one funding txn per canteen payable) on a WAL, ``synchronous=FULL``
  database file; only :func:`server.closing.settlement.settle_quarter` is timed. Settling closes a
  quarter for good, so the repeats run inside a transaction that is rolled back, and the
  last one commits; the value is the median.
* ``server.ingest_sales_per_s`` — :meth:`server.sales.ingest.IngestWorker.process` (one writer)
  on HMAC-signed sale batches already on the queue: verify the signature and shape, apply
  each sale to the ledger at most once, record the balance delta, commit, and build and
  sign one ack per message. Each message carries ONE sale (an online terminal sends each
  sale as it happens; the worker groups what has queued into one transaction). The value is
  the median of the rounds; ``server.ingest_batched_sales_per_s`` is the same with 20
  sales per message (a terminal emptying its outbox after an outage). The database already
  holds a quarter's history (1,000,000 sales with their ledger entries), because the cost of
  a sale grows with the indexes it is inserted into; messages are grouped into transactions
  the way the worker's loop takes them off its queue (``IngestWorker.groups``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.run import Context, Result
from server.books import ledger
from server.books.periods import year_number_sql
from server.closing.check import all_violations
from server.closing.settlement import settle_quarter
from server.infra.db import open_db, write_txn
from server.registry import funds, name_search
from server.registry import units as registry
from server.registry.terminals import provision
from server.sales import takings
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.protocol import Sale, SaleBatch, seal_hmac, topics
from simulator.harness.world import meal

QUARTER = "2026Q1"
Q_START = ms_from_china("2026-01-01T00:00")
Q_SPAN_MS = ms_from_china("2026-04-01T00:00") - Q_START


def _city(conn, canteens: int, units: int, holders: int, now_ms: int) -> None:  # noqa: ANN001
    with write_txn(conn):
        for u in range(units):
            registry.add_unit(conn, f"U{u:03d}", f"单位{u:03d}", 30_000)
        for c in range(canteens):
            registry.add_canteen(
                conn,
                f"C{c:03d}",
                f"食堂{c:03d}",
                f"U{c % units:03d}",
                operator=f"经营者{c % 40:02d}",
                self_operated=c % 5 == 0,
                # the sales below are lunches at this price: the server checks every sale's
                # price against the canteen's (a sale at another price would be quarantined)
                config={"meals": {"lunch": meal("11:30", "13:30", 1200)}},
                now_ms=now_ms,
            )
    with write_txn(conn):
        conn.executemany(
            "INSERT INTO holders(id, unit_id, name, staff_no) VALUES (?, ?, ?, ?)",
            [(f"H{h:06d}", f"U{h % units:03d}", "职工", str(h)) for h in range(holders)],
        )
        conn.executemany(
            "INSERT INTO cards(card_id, holder_id) VALUES (?, ?)",
            [(f"K{h:06d}", f"H{h:06d}") for h in range(holders)],
        )
        name_search.rebuild(conn)  # the name index, as the registry keeps it


def _bulk_sales(conn, n: int, canteens: int, units: int, holders: int) -> None:  # noqa: ANN001
    """n applied card sales spread evenly over the quarter and the canteens."""
    conn.execute("PRAGMA foreign_keys=OFF")
    with write_txn(conn):
        conn.execute(
            f"""
            WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < {n})
            INSERT INTO sales(terminal_id, seq, uuid, status, card_id, holder_id, unit_id, canteen_id,
                              amount_fen, subsidy_fen, self_fen, method, kind, meal_period,
                              occurred_at_ms, received_at_ms, txn_id)
            SELECT printf('T%03d', k % {canteens * 2}), k, printf('%032x', k), 'applied',
                   printf('K%06d', k % {holders}), printf('H%06d', k % {holders}),
                   printf('U%03d', (k % {holders}) % {units}),
                   printf('C%03d', k % {canteens}), 800 + k % 900, 800 + k % 900, 0, 'card', 'meal', 'lunch',
                   {Q_START} + (k - 1) * {Q_SPAN_MS} / {n},
                   {Q_START} + (k - 1) * {Q_SPAN_MS} / {n} + 2000, NULL
            FROM i
            """
        )
        # the sales' ledger effect, summarised: each canteen's payable holds its takings
        rows = conn.execute("SELECT canteen_id, sum(amount_fen) FROM sales GROUP BY canteen_id").fetchall()
        ledger.post(
            conn,
            "bench_seed",
            [ledger.Move(ledger.SYSTEM_INCOME, ledger.canteen_payable(c), a) for c, a in rows],
            0,
        )
        takings.rebuild(conn)  # the takings per slot and day, as ingest keeps them
    conn.execute("PRAGMA foreign_keys=ON")


def server_settle_5m(ctx: Context, n: int = 5_000_000, canteens: int = 100, repeats: int = 3) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_db(Path(tmp) / "settle.sqlite")
        now = ms_from_china("2026-04-05T09:00")
        _city(conn, canteens, units=60, holders=50_000, now_ms=now)
        t0 = time.perf_counter()
        _bulk_sales(conn, n, canteens, units=60, holders=50_000)
        generate_s = time.perf_counter() - t0
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            doc, created = settle_quarter(conn, QUARTER, now, force=True)
            conn.execute("ROLLBACK" if i < repeats - 1 else "COMMIT")
            times.append(time.perf_counter() - t0)
            assert created and doc["totals"]["sales_count"] == n
        size_mb = (Path(tmp) / "settle.sqlite").stat().st_size // 1_000_000
        conn.close()
    return [
        Result(
            "server.settle_5m_s",
            round(statistics.median(times), 2),
            "s",
            {
                "sales": n,
                "canteens": canteens,
                "runs": [round(t, 2) for t in times],
                "db_mb": size_mb,
                "generate_s": round(generate_s, 1),
            },
            target="< 10 s",
        )
    ]


def _history(conn, n: int, holders: int, units: int) -> None:  # noqa: ANN001
    """n earlier card sales (2025Q4, random uuids as terminals make them) with their ledger
    txns and entries, funded by an allocation: the ingest bench runs against a database
    that already holds a quarter's history, not an empty one."""
    per_person = (n // holders + 1) * 1_000
    with write_txn(conn):
        for u in range(units):
            funds.allocate(conn, f"U{u:03d}", "2025Q4", per_person, ms_from_china("2025-10-08T09:00"))
    base = conn.execute("SELECT max(id) FROM txns").fetchone()[0]
    start, span = (
        ms_from_china("2025-10-01T00:00"),
        ms_from_china("2026-01-01T00:00") - ms_from_china("2025-10-01T00:00"),
    )
    rows = f"WITH RECURSIVE i(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM i WHERE k < {n - 1})"
    holder = f"printf('H%06d', k % {holders})"
    canteen = "printf('C%03d', k % 100)"
    conn.execute("PRAGMA foreign_keys=OFF")
    with write_txn(conn):
        conn.execute(
            f"{rows} INSERT INTO txns(id, kind, ref, at_ms) "
            f"SELECT {base} + 1 + k, 'sale', printf('H%03d/%d', k % 300, k / 300 + 1), {start} FROM i"
        )
        conn.execute(
            f"""{rows}
            INSERT INTO sales(terminal_id, seq, uuid, status, card_id, holder_id, unit_id, canteen_id,
                              amount_fen, subsidy_fen, self_fen, method, kind, meal_period,
                              occurred_at_ms, received_at_ms, txn_id)
            SELECT printf('H%03d', k % 300), k / 300 + 1, lower(hex(randomblob(16))), 'applied',
                   printf('K%06d', k % {holders}), {holder},
                   printf('U%03d', (k % {holders}) % {units}), {canteen},
                   1000, 1000, 0, 'card', 'meal', 'lunch',
                   {start} + k * {span} / {n}, {start} + k * {span} / {n},
                   {base} + 1 + k
            FROM i"""
        )
        conn.execute(
            f"{rows} INSERT INTO entries(txn_id, from_account, to_account, amount_fen) "
            f"SELECT {base} + 1 + k, {ledger.purse_id_sql(holder, 'subsidy', year_number_sql(str(start)))}, "
            f"{ledger.canteen_payable_sql(canteen)}, 1000 FROM i"
        )
        conn.executemany(
            "INSERT OR IGNORE INTO accounts(id, kind) VALUES (?, 'payable')",
            [(ledger.canteen_payable(f"C{c:03d}"),) for c in range(100)],
        )
        deltas: dict[str, int] = {}
        for src, dst, amount in conn.execute(
            "SELECT from_account, to_account, sum(amount_fen) FROM entries WHERE txn_id > ? GROUP BY 1, 2",
            (base,),
        ):
            deltas[src] = deltas.get(src, 0) - amount
            deltas[dst] = deltas.get(dst, 0) + amount
        conn.executemany(
            "UPDATE accounts SET balance_fen = balance_fen + ? WHERE id = ?",
            [(d, a) for a, d in deltas.items()],
        )
        takings.rebuild(conn)
    conn.execute("PRAGMA foreign_keys=ON")


def _ingest_rounds(
    worker: IngestWorker,
    creds: list,
    seq: list[int],
    sales_per_msg: int,
    n: int,
    rounds: int,
    holders: int,
    now: int,
) -> tuple[list[float], list[int]]:  # noqa: ANN001
    rates: list[float] = []
    txns: list[int] = []
    for r in range(rounds):
        messages = []
        for m in range(n // sales_per_msg):
            t = m % len(creds)
            c = creds[t]
            batch = []
            for k in range(sales_per_msg):
                seq[t] += 1
                holder = (m * sales_per_msg + k + r * 7919 + sales_per_msg * 104_729) % holders
                batch.append(
                    Sale(
                        c.terminal_id,
                        seq[t],
                        uuid.uuid4().hex,
                        f"K{holder:06d}",
                        c.canteen_id,
                        1200,
                        now,
                        meal_period="lunch",
                        subsidy_fen=1200,
                    )
                )
            body = SaleBatch(tuple(batch)).to_body()
            messages.append(
                (
                    topics.sales(c.terminal_id),
                    seal_hmac("sale_batch", c.terminal_id, body, bytes.fromhex(c.secret_hex), now),
                )
            )
        applied_before = worker.stats.applied
        t0 = time.perf_counter()
        groups = list(worker.groups(messages))  # as the worker's loop takes them off its queue
        for group in groups:
            worker.process(group)
        elapsed = time.perf_counter() - t0
        assert worker.stats.applied - applied_before == n
        rates.append(n / elapsed)
        txns.append(len(groups))
    return rates, txns


def server_ingest(ctx: Context, n: int = 30_000, rounds: int = 3, history: int = 1_000_000) -> list[Result]:
    holders, terminals = 20_000, 200
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_db(Path(tmp) / "ingest.sqlite")
        clock = FakeClock(ms_from_china("2026-01-06T11:45"))
        now = clock.now_ms()
        _city(conn, canteens=100, units=60, holders=holders, now_ms=now)
        t0 = time.perf_counter()
        _history(conn, history, holders, units=60)
        history_s = time.perf_counter() - t0
        with write_txn(conn):
            for u in range(60):
                funds.allocate(conn, f"U{u:03d}", QUARTER, None, now)
            creds = [
                provision(conn, f"C{t % 100:03d}", now, "00" * 32, f"T{t:03d}") for t in range(terminals)
            ]
        seq = [0] * terminals
        worker = IngestWorker(conn, clock, lambda _t, _p, _r: True)
        for name, per_msg, target in (
            ("server.ingest_sales_per_s", 1, ">= 5,000/s"),
            ("server.ingest_batched_sales_per_s", 20, ""),
        ):
            rates, txns = _ingest_rounds(worker, creds, seq, per_msg, n, rounds, holders, now)
            out.append(
                Result(
                    name,
                    round(statistics.median(rates)),
                    "sales/s",
                    {
                        "sales": n,
                        "sales_per_message": per_msg,
                        "sales_per_txn": n // max(statistics.median(txns), 1),
                        "rounds": [round(x) for x in rates],
                        "history_sales": history,
                        "holders": holders,
                        "terminals": terminals,
                        "synchronous": "FULL",
                        "history_generate_s": round(history_s, 1),
                    },
                    target=target,
                )
            )
        t0 = time.perf_counter()
        violations = all_violations(conn)
        assert not violations, violations[:3]
        for r in out:
            r.params["check_s"] = round(time.perf_counter() - t0, 1)
        conn.close()
    return out


BENCHMARKS = [server_settle_5m, server_ingest]
