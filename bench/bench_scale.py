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
* ``scale.ingest_pg_2workers_ratio`` — the same load into one PostgreSQL database by two
  ``canteen-server run`` processes over one (a share group on Mosquitto, terminal partitions
  on NATS): :func:`scale_ingest_pg_2workers`.
* ``scale.pg_lock_2workers_ratio`` — the same sales applied in-process (no broker, no load
  generator) by two ingest processes over one, 50 messages per transaction: what the
  PostgreSQL locks alone allow (:func:`scale_pg_lock_2workers`).
* ``scale.fleet_1000_terminals`` (and ``…_peak_p99_ms``) — 1,000 simulated terminals through
  NATS into PostgreSQL, and through Mosquitto into SQLite in the same run:
  :func:`scale_fleet_1000`, :mod:`bench.fleet_terminals`.
"""

from __future__ import annotations

import json
import multiprocessing
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
from typing import Any

from bench.bench_server import QUARTER, _city
from bench.cpu_meter import CpuMeter, cores
from bench.run import Context, Result
from server.app import create_app
from server.closing.check import all_violations
from server.infra import pg
from server.infra.db import open_db, write_txn
from server.registry import funds
from server.registry.terminals import provision
from server.sales.ingest import IngestWorker
from server.service import ServerService
from shared.broker import MosquittoBroker
from shared.clock import SystemClock
from shared.mqtt import BrokerAddress, MqttLink
from shared.nats_broker import NatsBroker
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
    load = _load()
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
        load = f"{load} → {_load()}"
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
                "load": load,
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
        env = {**os.environ, "CANTEEN_HOME": str(home)}
        if pg.is_url(database):
            env["CANTEEN_DATABASE_URL"] = database
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
        cpu: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        r = 0
        for _ in range(rounds):
            for workers in (1, 2):
                procs = _server_processes(work, url, ctx.broker.url, ctx.broker.kind, workers)
                try:
                    messages = _messages(creds, n, clock.now_ms(), r)
                    meter = _round_meter(procs, server, ctx).start()
                    rates[workers].append(load.round(messages))
                    cpu[workers].append(meter.per_item_ms(n))
                finally:
                    _stop_processes(procs)
                r += 1
        _all_applied_once(conn, url, n * r)
    finally:
        if load is not None:
            load.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    split = "partition" if ctx.broker.kind == "nats" else "share group"
    return [
        _ratio(
            "scale.ingest_pg_2workers_ratio",
            rates,
            n,
            sales_per_message=1,
            split=split,
            broker=ctx.broker.kind,
            processes="canteen-server run",
            **_cpu_facts(cpu, rates),
        )
    ]


def _round_meter(procs: list[subprocess.Popen[str]], server: PostgresServer, ctx: Context) -> CpuMeter:
    """The CPU of one round by part: the server processes, PostgreSQL (the postmaster and
    its backends), the broker (none when embedded: then it is in the load generator) and
    this process (the publishers and the acknowledgement listener)."""
    return CpuMeter(
        {
            "workers": ([p.pid for p in procs], False),
            "postgres": ([server.pid()], True),
            "broker": ([getattr(ctx.broker, "pid", None)], False),
            "load_generator": ([os.getpid()], False),
        }
    )


def _cpu_facts(cpu: dict[int, list[dict[str, float]]], rates: dict[int, list[float]]) -> dict[str, Any]:
    """CPU ms per sale by part (medians of the rounds) and what the cores allow: with every
    part costing what it cost with two workers, ``cores / CPU per sale`` sales per second at
    most, so the ratio over one worker cannot exceed that over the one-worker rate; and the
    share of the cores the one-worker rounds kept busy (near 1.0, a second worker has no
    core left to run on)."""
    medians = {
        w: {part: round(statistics.median(r[part] for r in rounds), 3) for part in rounds[0]}
        for w, rounds in cpu.items()
    }
    ceiling = cores() * 1000 / medians[2]["all"]
    one = statistics.median(rates[1])
    return {
        "cpu_ms_per_sale_1_worker": medians[1],
        "cpu_ms_per_sale_2_workers": medians[2],
        "cores": cores(),
        "cpu_ceiling_sales_per_s": round(ceiling),
        "cpu_ceiling_ratio": round(ceiling / one, 2),
        # how much of the cores the one-worker rounds already kept busy (1.0: all of them)
        "cpu_busy_share_1_worker": round(one * medians[1]["all"] / 1000 / cores(), 2),
    }


def _all_applied_once(conn, url: str, expected: int) -> None:  # noqa: ANN001
    """After the rounds: every sale applied (once: the unique key) and the books check; then
    the database's connections closed."""
    applied = conn.execute("SELECT count(*) FROM sales WHERE status = 'applied'").fetchone()[0]
    assert applied == expected, (applied, expected)
    violations = all_violations(conn)
    assert not violations, violations[:3]
    conn.close()
    pg.close_pools(url)


def _ratio(name: str, rates: dict[int, list[float]], n: int, **facts: Any) -> Result:
    """Two workers over one: the ratio of the medians, with every round."""
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    return Result(
        name,
        round(two / one, 2),
        "×",
        {
            "one_worker_sales_per_s": round(one),
            "two_workers_sales_per_s": round(two),
            "rounds_1": [round(x) for x in rates[1]],
            "rounds_2": [round(x) for x in rates[2]],
            "sales": n,
            **facts,
            "load": _load(),
        },
        target=">= 1.6",
    )


# -- two ingest workers over one, in process: the locks without the broker --------------------

LOCK_GROUP = 50  # messages per transaction


def _apply_share(url: str, messages: list[tuple[str, bytes]], start: Any, out: Any) -> None:
    """In a child process: apply ``messages`` in LOCK_GROUP-message transactions once every
    process is ready; put the seconds it took on ``out``."""
    worker = IngestWorker(open_db(url), SystemClock(), lambda _t, _p, _r: True)
    start.wait()
    t0 = time.perf_counter()
    for i in range(0, len(messages), LOCK_GROUP):
        worker.process(messages[i : i + LOCK_GROUP])
    out.put(time.perf_counter() - t0)


def scale_pg_lock_2workers(ctx: Context, n: int = 4_000, rounds: int = 3) -> list[Result]:
    """``scale.pg_lock_2workers_ratio``: rounds of n pre-signed sales applied by one ingest
    process, then split between two (separate processes), alternating; the ratio of the
    medians. No broker and no load generator share the cores: what the locks allow."""
    if not available():
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer().start()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-lock-"))
    try:
        admin = pg.connect(server.url, pooled=False)
        admin.execute("CREATE DATABASE canteen_bench")
        admin.close()
        url = server.url_for("canteen_bench")
        create_app({"HOME": str(work), "DATABASE_URL": url})
        conn = open_db(url)
        clock = SystemClock()
        creds = _prepare(conn, clock.now_ms())
        conn.close()
        pg.close_pools(url)  # a forked child must not share this process's connections
        rates: dict[int, list[float]] = {1: [], 2: []}
        r = 0
        forks = multiprocessing.get_context("fork")
        for _ in range(rounds):
            for workers in (1, 2):
                messages = _messages(creds, n, clock.now_ms(), r)
                start, out = forks.Barrier(workers), forks.Queue()
                procs = [
                    forks.Process(target=_apply_share, args=(url, messages[i::workers], start, out))
                    for i in range(workers)
                ]
                for p in procs:
                    p.start()
                took = max(out.get(timeout=600) for _ in procs)
                for p in procs:
                    p.join(30)
                rates[workers].append(n / took)
                r += 1
        _all_applied_once(open_db(url), url, n * r)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return [_ratio("scale.pg_lock_2workers_ratio", rates, n, messages_per_transaction=LOCK_GROUP)]


# -- a fleet of 1,000 terminals ---------------------------------------------------------------

FLEET, FLEET_PROCESSES = 1_000, 2


def _fleet_phase(
    broker_url: str,
    creds: list,
    seqs: dict[str, int],
    holders: list[str],
    interval_s: float,
    duration_s: float,
    parts: dict[str, tuple[list[int | None], bool]],
    ack_qos: int = 1,
) -> dict:
    """The fleet sells for ``duration_s`` (one sale per terminal every ``interval_s``) from
    FLEET_PROCESSES processes; their outcome together, with the CPU each part spent per
    acknowledged sale from the start until the fleet processes end (``parts``: the server
    processes, the database, the broker; the fleet processes report their own, setup apart).
    ``fleet_late_s``: how long after the start the last fleet process was ready (0, as each is
    started only once all are ready: the setup — connects, subscriptions — is outside every
    part's figure). ``ack_qos``: the QoS of each terminal's acknowledgement subscription."""
    jobs = []
    for p in range(FLEET_PROCESSES):
        mine = creds[p::FLEET_PROCESSES]
        jobs.append(
            {
                "broker_url": broker_url,
                "terminals": [
                    {"id": c.terminal_id, "secret": c.secret_hex, "canteen": c.canteen_id} for c in mine
                ],
                "seq_start": {c.terminal_id: seqs.get(c.terminal_id, 0) for c in mine},
                "holders": holders[p::FLEET_PROCESSES],
                "interval_s": interval_s,
                "duration_s": duration_s,
                "drain_s": 90.0,
                "seed": p,
                "ack_qos": ack_qos,
            }
        )
    procs, start_at = _start_fleet(jobs)
    # the meter runs from the start on (every fleet process connected and subscribed by then):
    # its figures are selling's, not the setup's that a fleet does once
    time.sleep(max(0.0, start_at - time.time()))
    meter = CpuMeter(parts).start()
    outs = []
    for proc in procs:
        out = proc.stdout.read()  # type: ignore[union-attr]
        if proc.wait(300) != 0:
            raise RuntimeError("a fleet process failed")
        outs.append(json.loads(out))
    latencies = sorted(x for o in outs for x in o["latencies_ms"])
    for o in outs:
        seqs.update(o["seqs"])
    sold, acked = sum(o["sold"] for o in outs), len(latencies)
    span = max(o["last_ack"] for o in outs) - min(o["first_tap"] for o in outs)
    cpu = meter.per_item_ms(max(acked, 1), reported={"fleet": sum(o["cpu_s"] for o in outs)})
    return {
        "sold": sold,
        "acked": acked,
        "refused": sum(o["refused_count"] for o in outs),
        "sales_per_s": acked / span if span > 0 else 0.0,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "cpu_ms_per_sale": cpu,
        "fleet_late_s": round(max(o["late_s"] for o in outs), 2),
    }


def _start_fleet(jobs: list[dict]) -> tuple[list[subprocess.Popen[str]], float]:
    """One ``bench.fleet_terminals`` process per job; each says "ready" once connected and
    subscribed (on NATS a JetStream consumer per terminal: seconds for a thousand), then all
    are told one start, after the slowest. The processes, and the start (wall clock)."""
    procs: list[subprocess.Popen[str]] = []
    started = False
    try:
        for job in jobs:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fleet_terminals"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(proc)
            proc.stdin.write(json.dumps(job) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise RuntimeError("a fleet process failed before it was ready")
        start_at = time.time() + 0.5  # every process told before the first tap
        for proc in procs:
            proc.stdin.write(f"{start_at}\n")  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        started = True
    finally:
        if not started:
            for proc in procs:  # none left waiting for a start that will not come
                proc.kill()
                proc.wait()
    return procs, start_at


def _percentile(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def _fleet_run(  # noqa: ANN001
    broker,
    database: str | None,
    peak_interval_s: float,
    peak_s: float,
    burst: int,
    workers: int = 1,
    database_pid: int | None = None,
    ack_qos: int = 1,
) -> dict:
    """One deployment (a broker, a database; one ``canteen-server run`` process): the fleet
    provisioned untimed, a lunch peak, then a burst (each terminal's outbox of ``burst``
    sales at once, as after a reconnect): capacity."""
    home = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        config = {"HOME": str(home)}
        if database is not None:
            config["DATABASE_URL"] = database
        app = create_app(config)  # schema and server key, once
        target = str(app.config["DATABASE"])
        conn = open_db(target)
        now = int(time.time() * 1000)
        _city(conn, canteens=CANTEENS, units=UNITS, holders=HOLDERS, now_ms=now - 3_600_000)
        with write_txn(conn):
            for u in range(UNITS):
                funds.allocate(conn, f"U{u:03d}", QUARTER, None, now)
            creds = [
                provision(conn, f"C{t % CANTEENS:03d}", now - 3_600_000, "00" * 32, f"F{t:04d}")
                for t in range(FLEET)
            ]
        procs = _server_processes(home, target, broker.url, broker.kind, workers)
        seqs: dict[str, int] = {}
        cards = [f"K{h:06d}" for h in range(HOLDERS)]
        parts = {
            "server": ([p.pid for p in procs], False),
            "postgres": ([database_pid], True),
            "broker": ([broker.pid], False),
        }
        try:
            peak = _fleet_phase(
                broker.url, creds, seqs, cards[: HOLDERS // 2], peak_interval_s, peak_s, parts, ack_qos
            )
            # ~burst sales per terminal, published as fast as the fleet can sign them
            flood = _fleet_phase(
                broker.url, creds, seqs, cards[HOLDERS // 2 :], 0.05, burst * 0.05, parts, ack_qos
            )
            # the burst keeps every part busy: its CPU per sale bounds what the cores allow (the
            # peak's includes the idle work of half-busy minutes, so it bounds nothing)
            flood["cpu_ceiling_sales_per_s"] = round(cores() * 1000 / flood["cpu_ms_per_sale"]["all"])
        finally:
            _stop_processes(procs)
        applied = conn.execute("SELECT count(*) FROM sales WHERE status = 'applied'").fetchone()[0]
        sold = peak["sold"] + flood["sold"]
        assert applied == peak["acked"] + flood["acked"] == sold, (applied, peak, flood)
        assert peak["refused"] == flood["refused"] == 0, (peak, flood)
        violations = all_violations(conn)
        assert not violations, violations[:3]
        conn.close()
        if database is not None:
            pg.close_pools(database)
        return {"peak": peak, "burst": flood}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def scale_fleet_1000(
    ctx: Context, peak_interval_s: float = 5.0, peak_s: float = 30.0, burst: int = 4, ack_qos: int = 1
) -> list[Result]:
    """``scale.fleet_1000_terminals``: 1,000 terminals (each its own id, key, sequence numbers
    and outbox; :mod:`bench.fleet_terminals`, two processes) selling a lunch peak — one sale
    per terminal every ``peak_interval_s`` on average, one sale per message — through NATS
    (a nats-server started here) into PostgreSQL (its own cluster, durable settings), one
    server process; then a burst of ``burst`` sales per terminal at once, whose drain rate is
    the capacity (``value``: acknowledged sales/s of the burst, first tap to last ack). The
    same fleet through Mosquitto into SQLite in the same run for the ratio. Every sale
    applied once, acknowledged, the ledger checked. ``ack_qos``: the QoS of each terminal's
    acknowledgement subscription (0: terminals with ``mqtt_light_subscriptions``)."""
    if not (available() and NatsBroker.available() and MosquittoBroker.available()):
        raise RuntimeError("needs PostgreSQL, nats-server and mosquitto")
    pg_server = PostgresServer().start()
    nats = NatsBroker().start()
    mosquitto = MosquittoBroker().start()
    load_before = _load()
    try:
        admin = pg.connect(pg_server.url, pooled=False)
        admin.execute("CREATE DATABASE canteen_fleet")
        admin.close()
        cluster = _fleet_run(
            nats,
            pg_server.url_for("canteen_fleet"),
            peak_interval_s,
            peak_s,
            burst,
            database_pid=pg_server.pid(),
            ack_qos=ack_qos,
        )
        city = _fleet_run(mosquitto, None, peak_interval_s, peak_s, burst, ack_qos=ack_qos)
    finally:
        mosquitto.stop()
        nats.stop()
        pg_server.stop()
    load_after = _load()

    def shown(r: dict) -> dict:
        return {k: round(v) if isinstance(v, float) else v for k, v in r.items()}

    common = {
        "terminals": FLEET,
        "peak_offered_per_s": round(FLEET / peak_interval_s),
        "peak_s": peak_s,
        "burst_per_terminal": burst,
        "sales_per_message": 1,
        "ack_qos": ack_qos,
        "server_processes": 1,
        "load": f"{load_before} → {load_after}",
    }
    nats_pg, mosq_sqlite = cluster, city
    return [
        Result(
            "scale.fleet_1000_terminals",
            round(nats_pg["burst"]["sales_per_s"]),
            "sales/s",
            {
                **common,
                "path": "NATS → PostgreSQL",
                "burst": shown(nats_pg["burst"]),
                "peak": shown(nats_pg["peak"]),
                "mosquitto_sqlite_sales_per_s": round(mosq_sqlite["burst"]["sales_per_s"]),
                "nats_pg_over_mosquitto_sqlite": round(
                    nats_pg["burst"]["sales_per_s"] / mosq_sqlite["burst"]["sales_per_s"], 2
                ),
            },
            target=">= 5,000",
        ),
        Result(
            "scale.fleet_1000_terminals_peak_p99_ms",
            round(nats_pg["peak"]["p99_ms"]),
            "ms",
            {
                **common,
                "path": "NATS → PostgreSQL",
                "peak": shown(nats_pg["peak"]),
                "mosquitto_sqlite_p99_ms": round(mosq_sqlite["peak"]["p99_ms"]),
                "mosquitto_sqlite_peak": shown(mosq_sqlite["peak"]),
                "mosquitto_sqlite_burst": shown(mosq_sqlite["burst"]),
            },
            target="< 1000",
        ),
    ]


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


BENCHMARKS = [scale_ingest_pg, scale_ingest_pg_2workers, scale_pg_lock_2workers, scale_fleet_1000]
