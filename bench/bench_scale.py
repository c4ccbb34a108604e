"""Scale-out benchmarks (issue 16): the server on PostgreSQL.

* ``scale.ingest_pg_sales_per_s`` — signed sales published through the real broker
  (``ctx.broker``) by 200 terminals' worth of messages (one sale per message, QoS 1, from 4
  publishing connections), verified, applied to the ledger at most once, committed and
  acknowledged by one server process (one ingest worker) whose database is PostgreSQL
  (its own cluster, started for the run with the project's settings,
  ``deploy/postgresql/canteen.conf``: ``fsync`` and ``synchronous_commit`` on); timed from
  the first publish to the last acknowledgement received. The same run repeats it with the
  SQLite file (WAL, ``synchronous=FULL``) for the ratio (``params.sqlite_sales_per_s``).
  The messages are signed before the clock starts; the city (100 canteens, 20,000
  cardholders with their quarter's allocation) is set up untimed and holds no history:
  :mod:`bench.bench_server`'s ingest figure is the one with a quarter of history, in-process.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.bench_server import QUARTER, _city
from bench.run import Context, Result
from server.closing.check import all_violations
from server.infra import pg
from server.infra.db import open_db, write_txn
from server.registry import funds
from server.registry.terminals import provision
from server.service import ServerService
from shared.clock import SystemClock
from shared.mqtt import BrokerAddress, MqttLink
from shared.pg_server import PostgresServer, available
from shared.protocol import Sale, SaleBatch, seal_hmac, topics

HOLDERS, CANTEENS, UNITS, TERMINALS, PUBLISHERS = 20_000, 100, 60, 200, 4


def _messages(creds: list, n: int, now: int, round_: int) -> list[tuple[str, bytes]]:
    out = []
    seq = round_ * n
    for m in range(n):
        c = creds[m % len(creds)]
        holder = (m * 7919 + round_ * 104_729) % HOLDERS
        seq_m = seq // len(creds) + m // len(creds) + 1
        sale = Sale(c.terminal_id, seq_m, uuid.uuid4().hex, f"K{holder:06d}", c.canteen_id, 1200, now,
                    meal_period="lunch", subsidy_fen=1200)  # fmt: skip
        body = SaleBatch((sale,)).to_body()
        out.append(
            (
                topics.sales(c.terminal_id),
                seal_hmac("sale_batch", c.terminal_id, body, bytes.fromhex(c.secret_hex), now),
            )
        )
    return out


def _through_broker(ctx: Context, database: str, n: int, rounds: int) -> tuple[list[float], dict]:
    """Rounds of n sales through the broker into one server on ``database``: sales/s each."""
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    config = {"HOME": str(work / "home")}
    if pg.is_url(database):
        config["DATABASE_URL"] = database
    service = ServerService(
        ctx.broker.url, config=config, client_id=f"bench-scale-{uuid.uuid4().hex[:6]}"
    ).start()
    clock = SystemClock()
    address = BrokerAddress.parse(ctx.broker.url)
    acks = 0
    lock = threading.Lock()
    done = threading.Event()
    want = [0]

    def on_ack(topic: str, payload: bytes) -> None:
        nonlocal acks
        with lock:
            acks += 1
            if acks >= want[0]:
                done.set()

    acks_topic = f"{topics.PREFIX}/t/+/down/ack"
    listener = MqttLink(
        f"bench-acks-{uuid.uuid4().hex[:6]}", address, subscriptions=[(acks_topic, 1)], on_message=on_ack
    ).start()
    pubs = [
        MqttLink(f"bench-pub{i}-{uuid.uuid4().hex[:6]}", address, max_inflight=1000).start()
        for i in range(PUBLISHERS)
    ]
    try:
        assert listener.wait_connected(10) and all(p.wait_connected(10) for p in pubs)
        conn = open_db(service.app.config["DATABASE"])
        now = clock.now_ms()
        _city(conn, canteens=CANTEENS, units=UNITS, holders=HOLDERS, now_ms=now - 3_600_000)
        with write_txn(conn):
            for u in range(UNITS):
                funds.allocate(conn, f"U{u:03d}", QUARTER, None, now)
            creds = [
                provision(conn, f"C{t % CANTEENS:03d}", now - 3_600_000, "00" * 32, f"S{t:03d}")
                for t in range(TERMINALS)
            ]
        rates = []
        for r in range(rounds):
            messages = _messages(creds, n, clock.now_ms(), r)
            with lock:
                acks, want[0] = 0, n
                done.clear()
            t0 = time.perf_counter()
            threads = [
                threading.Thread(target=_publish_all, args=(p, messages[i::PUBLISHERS]))
                for i, p in enumerate(pubs)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if not done.wait(600):
                raise RuntimeError(f"only {acks} of {n} acknowledgements")
            rates.append(n / (time.perf_counter() - t0))
        applied = conn.execute("SELECT count(*) FROM sales WHERE status = 'applied'").fetchone()[0]
        assert applied == n * rounds, (applied, n * rounds)
        violations = all_violations(conn)
        assert not violations, violations[:3]
        stats = service.ingest.stats  # type: ignore[union-attr]
        conn.close()
        return rates, {"transactions": stats.batches, "messages": stats.messages}
    finally:
        for p in pubs:
            p.stop()
        listener.stop()
        service.stop()
        shutil.rmtree(work, ignore_errors=True)


def _publish_all(link: MqttLink, messages: list[tuple[str, bytes]]) -> None:
    for topic, payload in messages:
        while not link.publish(topic, payload):
            time.sleep(0.001)


def scale_ingest_pg(ctx: Context, n: int = 10_000, rounds: int = 3) -> list[Result]:
    if not available():
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer().start()  # the project's settings, durable
    try:
        admin = pg.connect(server.url, pooled=False)
        admin.execute("CREATE DATABASE canteen_bench")
        admin.close()
        url = server.url_for("canteen_bench")
        pg_rates, pg_info = _through_broker(ctx, url, n, rounds)
        pg.close_pools(url)
    finally:
        server.stop()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-sqlite-"))
    try:
        sqlite_rates, _ = _through_broker(ctx, str(work / "canteen.sqlite"), n, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pg_value, sqlite_value = statistics.median(pg_rates), statistics.median(sqlite_rates)
    return [
        Result(
            "scale.ingest_pg_sales_per_s",
            round(pg_value),
            "sales/s",
            {
                "sales": n,
                "sales_per_message": 1,
                "rounds": [round(x) for x in pg_rates],
                "broker": ctx.broker.kind,
                "workers": 1,
                "terminals": TERMINALS,
                "holders": HOLDERS,
                "postgresql": "fsync on, synchronous_commit on",
                "transactions": pg_info["transactions"],
                "sqlite_sales_per_s": round(sqlite_value),
                "sqlite_rounds": [round(x) for x in sqlite_rates],
                "pg_over_sqlite": round(pg_value / sqlite_value, 2),
            },
        )
    ]


BENCHMARKS = [scale_ingest_pg]
