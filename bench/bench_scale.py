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

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.bench_server import QUARTER, _city
from bench.run import Context, Result
from server.app import create_app
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


def _prepare(conn, now: int) -> list:  # noqa: ANN001
    """The city, its quarter's allocation and the terminals (untimed); their credentials."""
    _city(conn, canteens=CANTEENS, units=UNITS, holders=HOLDERS, now_ms=now - 3_600_000)
    with write_txn(conn):
        for u in range(UNITS):
            funds.allocate(conn, f"U{u:03d}", QUARTER, None, now)
        return [
            provision(conn, f"C{t % CANTEENS:03d}", now - 3_600_000, "00" * 32, f"S{t:03d}")
            for t in range(TERMINALS)
        ]


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
        creds = _prepare(conn, clock.now_ms())
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


# -- two ingest workers over one ------------------------------------------------------------


def _server_processes(
    home: Path, database: str, broker_url: str, kind: str, workers: int
) -> list[subprocess.Popen[str]]:
    """``workers`` ``canteen-server run`` processes on one data folder and one database,
    splitting ingest: a share group on Mosquitto, terminal partitions on NATS."""
    procs = []
    for i in range(workers):
        env = {**os.environ, "CANTEEN_HOME": str(home), "CANTEEN_DATABASE_URL": database}
        env["CANTEEN_MQTT_BROKER_KIND"] = kind
        if workers > 1 and kind == "nats":
            env["CANTEEN_MQTT_INGEST_PARTITION"] = f"{i}/{workers}"
        elif workers > 1:
            env["CANTEEN_MQTT_INGEST_SHARE_GROUP"] = "ingest"
        log_file = open(home / f"server-{workers}-{i}.log", "a", encoding="utf-8")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from server.cli.root import main; main()",
                    "run",
                    "--broker",
                    broker_url,
                    "--port",
                    "0",
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )  # fmt: skip
        )
        log_file.close()
    for p in procs:
        for line in p.stdout:  # type: ignore[union-attr]
            if line.startswith("server:"):
                break
        else:
            raise RuntimeError(f"a server process ended before serving (logs in {home})")
    time.sleep(1.0)  # their subscriptions acknowledged
    return procs


def _stop_processes(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


class _Load:
    """Publishers and one acknowledgement listener on the broker: rounds of pre-signed
    messages, each timed from the first publish to the last acknowledgement."""

    def __init__(self, broker_url: str) -> None:
        address = BrokerAddress.parse(broker_url)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._acks = 0
        self._want = 0
        self.listener = MqttLink(
            f"bench-acks-{uuid.uuid4().hex[:6]}", address,
            subscriptions=[(f"{topics.PREFIX}/t/+/down/ack", 1)], on_message=self._on_ack,
        ).start()  # fmt: skip
        self.pubs = [
            MqttLink(f"bench-pub{i}-{uuid.uuid4().hex[:6]}", address, max_inflight=1000).start()
            for i in range(PUBLISHERS)
        ]
        assert self.listener.wait_connected(10) and all(p.wait_connected(10) for p in self.pubs)

    def _on_ack(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._acks += 1
            if self._acks >= self._want:
                self._done.set()

    def round(self, messages: list[tuple[str, bytes]]) -> float:
        with self._lock:
            self._acks, self._want = 0, len(messages)
            self._done.clear()
        t0 = time.perf_counter()
        threads = [
            threading.Thread(target=_publish_all, args=(p, messages[i::PUBLISHERS]))
            for i, p in enumerate(self.pubs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not self._done.wait(600):
            raise RuntimeError(f"only {self._acks} of {len(messages)} acknowledgements")
        return len(messages) / (time.perf_counter() - t0)

    def stop(self) -> None:
        for p in self.pubs:
            p.stop()
        self.listener.stop()


def scale_ingest_pg_2workers(ctx: Context, n: int = 4_000, rounds: int = 3) -> list[Result]:
    """``scale.ingest_pg_2workers_ratio``: the same rounds of signed sales into one PostgreSQL
    database by one ``canteen-server run`` process, then by two (processes: on 2 cores two
    threads of one would share one interpreter lock), alternating one/two so that a change
    in the machine's load falls on both; the ratio of the medians."""
    if not available():
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer().start()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-2w-"))
    load = None
    try:
        admin = pg.connect(server.url, pooled=False)
        admin.execute("CREATE DATABASE canteen_bench")
        admin.close()
        url = server.url_for("canteen_bench")
        create_app({"HOME": str(work), "DATABASE_URL": url})  # schema and server key, once
        conn = open_db(url)
        clock = SystemClock()
        creds = _prepare(conn, clock.now_ms())
        load = _Load(ctx.broker.url)
        rates: dict[int, list[float]] = {1: [], 2: []}
        r = 0
        for _ in range(rounds):
            for workers in (1, 2):
                procs = _server_processes(work, url, ctx.broker.url, ctx.broker.kind, workers)
                try:
                    rates[workers].append(load.round(_messages(creds, n, clock.now_ms(), r)))
                finally:
                    _stop_processes(procs)
                r += 1
        applied = conn.execute("SELECT count(*) FROM sales WHERE status = 'applied'").fetchone()[0]
        assert applied == n * r, (applied, n * r)
        violations = all_violations(conn)
        assert not violations, violations[:3]
        conn.close()
        pg.close_pools(url)
    finally:
        if load is not None:
            load.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    return [
        Result(
            "scale.ingest_pg_2workers_ratio",
            round(two / one, 2),
            "×",
            {
                "one_worker_sales_per_s": round(one),
                "two_workers_sales_per_s": round(two),
                "rounds_1": [round(x) for x in rates[1]],
                "rounds_2": [round(x) for x in rates[2]],
                "sales": n,
                "sales_per_message": 1,
                "split": "partition" if ctx.broker.kind == "nats" else "share group",
                "broker": ctx.broker.kind,
                "processes": "canteen-server run",
                "load": _load(),
            },
            target=">= 1.6",
        )
    ]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


BENCHMARKS = [scale_ingest_pg, scale_ingest_pg_2workers]
