"""``canteen-sim chaos``: real processes, real faults, and an audit that no fen was lost.

One run: a Mosquitto broker (persistence on), ``canteen-server run`` and ``T`` ×
``canteen-terminal run --events`` as child processes, each terminal reaching the broker
and the server through its own :class:`~simulator.harness.netproxy.NetProxy`; a small city
(:mod:`simulator.chaos.world`); a plan of taps and faults from the seed
(:mod:`simulator.chaos.plan`) played against the wall clock; an injector on the broker
(:mod:`simulator.chaos.inject`). After the workload every fault is healed, every process
brought back, the outboxes drained; then everything stops and :mod:`simulator.chaos.audit`
compares the journals with the server. With ``--cluster`` (:mod:`simulator.chaos.cluster`)
the broker is 3 NATS nodes, each terminal reaching every node through a proxy of its own
and either server process through one proxy that fails over (a load balancer), the server
is two ``canteen-server run`` processes on a PostgreSQL of the run's own, and nodes, server
processes and PostgreSQL are struck too; the same audit reads the PostgreSQL database. A
run passes with ``lost == 0``,
``double_applied == 0``, ``ledger_sum_fen == 0``, ``overdraft_fen <= overdraft_bound_fen``,
every sale signed with a stolen terminal key quarantined and none applied, no honest sale
quarantined, and no violations.

:func:`run_sweep` runs seeds one after another and reports which failed (``make chaos``).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from server.app import create_app
from server.books.periods import Quarter
from server.infra import db, pg
from server.infra.db import open_db
from shared.broker import free_port
from shared.clock import SystemClock
from shared.private_files import write_private
from simulator.chaos.audit import audit, read_journal, read_reversals
from simulator.chaos.cluster import ChaosCluster
from simulator.chaos.inject import COMPROMISED_SEQ_BASE, Injector
from simulator.chaos.plan import ChaosOptions, Fault, Plan, build_plan
from simulator.chaos.procs import BrokerProcess, ServerProcess, TerminalProcess
from simulator.chaos.world import ChaosWorld, build_world
from simulator.harness.netproxy import NetProxy

Say = Callable[[str], None]
DRAIN_TIMEOUT_S = 180.0


@dataclass
class Term:
    index: int
    terminal_id: str
    config_path: Path
    db_path: Path
    log_path: Path
    mqtt: list[NetProxy]  # one per broker node
    http: NetProxy
    events: list[dict[str, Any]] = field(default_factory=list)
    proc: TerminalProcess | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.proc = TerminalProcess(self.config_path, self.log_path, self.events).start()

    @property
    def proxies(self) -> list[NetProxy]:
        return [*self.mqtt, self.http]

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.running

    def online(self) -> bool:
        """The last link event said in sync."""
        links = [e for e in list(self.events) if e.get("event") == "link"]
        return bool(links) and bool(links[-1]["online"])


class ChaosRun:
    def __init__(self, opts: ChaosOptions, workdir: Path, say: Say) -> None:
        self.opts = opts
        self.dir = workdir
        self.say = say
        self.clock = SystemClock()
        self.executed: Counter[str] = Counter()
        self.not_injected: Counter[str] = Counter()  # nothing captured yet, or the broker stayed down
        self._count_lock = threading.Lock()
        self.taps_sent = 0
        self.taps_skipped = 0
        self._threads: list[threading.Thread] = []
        self.broker: BrokerProcess | None = None
        self.servers: list[ServerProcess] = []
        self.cluster: ChaosCluster | None = ChaosCluster(workdir) if opts.cluster else None
        self.injector: Injector | None = None
        self.terms: list[Term] = []
        self.world: ChaosWorld | None = None
        self.plan: Plan | None = None

    # --- setup -------------------------------------------------------------------------

    def setup(self) -> None:
        home = self.dir / "server"
        config = {"HOME": str(home)}
        if self.cluster is not None:
            config["DATABASE_URL"] = self.cluster.start_database()
        app = create_app(config)
        self.db_path = app.config["DATABASE"]  # a SQLite file, or the cluster's PostgreSQL URL
        now = self.clock.now_ms()
        conn = open_db(self.db_path)
        self.world = build_world(
            conn,
            now,
            seed=self.opts.seed,
            diners=self.opts.diners,
            terminals=self.opts.terminals,
            public_key=app.extensions["canteen_server_key"].public_hex,
            quarter=str(Quarter.of_ms(now)),
        )
        conn.close()
        self.plan = build_plan(self.opts, self.world.cards)
        self.say(
            f"chaos seed {self.opts.seed}: {self.opts.terminals} terminals, {self.opts.diners} diners, "
            f"{self.plan.workload_s:.0f} s, {len(self.plan.taps)} taps planned"
        )
        for i, skew in self.plan.clock_skew.items():
            self.say(f"  clock skew T{i + 1}: {skew / 1000:+.0f} s")
        for f in self.plan.faults:
            self.say("  " + f.describe())
        if self.cluster is not None:
            broker_urls = self.cluster.start_brokers()
            self.servers = self.cluster.start_servers(home)
            self.say(f"  cluster: NATS {', '.join(broker_urls)}; PostgreSQL {db.shown(self.db_path)}")
        else:
            self.broker = BrokerProcess(free_port(), self.dir / "broker", self.opts.broker).start()
            broker_urls = [self.broker.url]
            self.servers = [ServerProcess(home, self.broker.url, free_port()).start()]
        broker_ports = [int(u.rsplit(":", 1)[1]) for u in broker_urls]
        server_ports = [s.port for s in self.servers]
        for i, creds in enumerate(self.world.terminals):
            # each terminal lists the nodes from its own first, and reaches a server process
            # through a proxy that fails over to the other (a load balancer)
            k, m = i % len(broker_ports), i % len(server_ports)
            mqtt = [NetProxy(p) for p in broker_ports[k:] + broker_ports[:k]]
            http = NetProxy(server_ports[m], alternates=tuple(server_ports[m + 1 :] + server_ports[:m]))
            term = Term(
                i,
                creds.terminal_id,
                self.dir / f"{creds.terminal_id}.json",
                self.dir / f"{creds.terminal_id}.sqlite",
                self.dir / f"{creds.terminal_id}.log",
                mqtt,
                http,
            )
            write_private(  # the configuration holds the terminal's secret
                term.config_path,
                json.dumps(
                    {
                        **creds.to_json(),
                        "broker_url": ",".join(f"mqtt://127.0.0.1:{p.port}" for p in mqtt),
                        "server_url": f"http://127.0.0.1:{http.port}",
                        "db_path": str(term.db_path),
                        "reader": "stdin",
                        "batch_size": 20,
                        "ack_timeout_s": 2.0,
                        "heartbeat_s": 1.0,
                        "clock_offset_ms": self.plan.clock_skew.get(i, 0),
                    }
                ),
            )
            term.start()
            self.terms.append(term)
        deadline = time.monotonic() + 60
        while not all(t.online() for t in self.terms):
            if time.monotonic() > deadline:
                raise RuntimeError("terminals did not get in sync with the server")
            time.sleep(0.05)
        self.injector = Injector(",".join(broker_urls), self.clock.now_ms).start()

    # --- the workload ------------------------------------------------------------------

    def play(self) -> None:
        assert self.plan is not None
        timeline: list[tuple[float, int, Callable[[], None]]] = []
        for n, tap in enumerate(self.plan.taps):
            timeline.append((tap.at_s, n, lambda tap=tap: self._tap(tap.terminal, [tap.line])))
        for f in self.plan.faults:
            timeline.append((f.at_s, -1, lambda f=f: self._fault(f)))
            if f.duration_s:
                timeline.append((f.at_s + f.duration_s, -2, lambda f=f: self._end(f)))
        timeline.sort(key=lambda e: (e[0], e[1]))
        t0 = time.monotonic()
        for at, _, action in timeline:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            action()
        for t in self._threads:
            t.join(60)

    def _tap(self, index: int, lines: list[str]) -> None:
        term = self.terms[index]
        with term.lock:
            ok = term.up and term.proc is not None and term.proc.send(lines)
        if ok:
            self.taps_sent += len(lines)
        else:
            self.taps_skipped += len(lines)

    def _background(self, action: Callable[[], None]) -> None:
        t = threading.Thread(target=action, daemon=True)
        t.start()
        self._threads.append(t)

    def _fault(self, f: Fault) -> None:
        assert self.servers and self.injector and self.world
        kind = f.kind
        if kind.startswith("partition_"):
            term = self.terms[f.target or 0]
            mode = kind.removeprefix("partition_")
            for proxy in term.proxies:
                {"cut": proxy.cut, "oneway": proxy.oneway, "blackhole": proxy.blackhole}[mode]()
        elif kind == "broker_restart":
            assert self.broker is not None
            self.broker.kill() if f.params.get("how") == "sigkill" else self.broker.terminate()
        elif kind == "server_kill":
            self.servers[f.params.get("server", 0)].kill()
        elif kind == "node_kill":
            assert self.cluster is not None
            self.cluster.kill_node(f.params["node"])
        elif kind == "pg_restart":
            assert self.cluster is not None
            self.cluster.halt_database(f.params["how"])
        elif kind == "terminal_kill":
            term = self.terms[f.target or 0]
            with term.lock:
                if term.proc is not None and term.proc.send(list(f.params["burst"])):
                    self.taps_sent += len(f.params["burst"])
                time.sleep(f.params["after_ms"] / 1000)
                if term.proc is not None:
                    term.proc.kill()
        else:  # a message on the broker, off the timeline: the broker may be restarting
            self._background(lambda: self._inject_when_up(f))
            return
        self.executed[kind] += 1

    def _inject_when_up(self, f: Fault) -> None:
        """Inject once the injector is connected (within 10 s); counted only if a message went out."""
        assert self.injector is not None
        # a compromised batch is made and remembered even with the broker down: it is sent
        # again after the drain, as a thief retries
        sent = (self.injector.link.wait_connected(10) or f.kind == "compromised") and self._inject(f)
        with self._count_lock:
            (self.executed if sent else self.not_injected)[f.kind] += 1

    def _inject(self, f: Fault) -> int:
        assert self.injector and self.world
        p = f.params
        if f.kind == "duplicate":
            return self.injector.duplicate(p["pick"])
        if f.kind == "reorder":
            return self.injector.reorder(p["pick"], p["run"])
        if f.kind == "forged":
            creds = self.world.terminals[p["target"]]
            return self.injector.forged(
                p["as"], creds.terminal_id, creds.canteen_id, p["card"], p["amount_fen"]
            )
        if f.kind == "compromised":
            creds = self.world.terminals[p["target"]]
            others = self.world.cards_of_other_units(creds.canteen_id) or self.world.cards
            return self.injector.compromised_batch(
                creds.terminal_id,
                creds.secret_hex,  # the stolen key
                list(p["variants"]),
                canteen_id=creds.canteen_id,
                card_id=p["card"],
                other_unit_card=others[min(int(p["other_pick"] * len(others)), len(others) - 1)],
                max_sale_fen=self.world.risk["max_sale_fen"],
                meal_fen=p["meal_fen"],
                item_fen=p["item_fen"],
                days_ahead=p["days_ahead"],
            )
        return self.injector.corrupted(p["pick"], p["where"], p["flips"])

    def _end(self, f: Fault) -> None:
        if f.kind.startswith("partition_"):
            for proxy in self.terms[f.target or 0].proxies:
                proxy.heal()
        elif f.kind == "broker_restart":
            assert self.broker is not None
            self._background(self.broker.start)
        elif f.kind == "server_kill":
            n = f.params.get("server", 0)
            self._background(
                self.servers[n].start if self.cluster is None else lambda: self.cluster.start_server(n)  # type: ignore[union-attr]
            )
        elif f.kind == "node_kill":
            assert self.cluster is not None
            self._background(lambda: self.cluster.start_node(f.params["node"]))  # type: ignore[union-attr]
        elif f.kind == "pg_restart":
            assert self.cluster is not None
            self._background(self.cluster.resume_database)
        elif f.kind == "terminal_kill":
            term = self.terms[f.target or 0]
            with term.lock:
                term.start()

    # --- the end -----------------------------------------------------------------------

    def drain(self) -> bool:
        """Heal everything, bring every process back, wait for every outbox to empty."""
        for term in self.terms:
            for proxy in term.proxies:
                proxy.heal()
        if self.cluster is not None:
            self.cluster.heal()
        else:
            assert self.broker is not None
            if not self.broker.running:
                self.broker.start()
            for server in self.servers:
                if not server.running:
                    server.start()
        for term in self.terms:
            with term.lock:
                if not term.up:
                    term.start()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            if sum(_outbox(t.db_path) for t in self.terms) == 0:
                return self._compromised_arrived(deadline)
            time.sleep(0.2)
        return False

    def _compromised_arrived(self, deadline: float) -> bool:
        """The thief sends every compromised batch once more; wait until the server has
        decided each of its sales (whatever it decided: the audit judges that)."""
        assert self.injector is not None
        wanted = {(c.terminal_id, c.seq) for c in self.injector.compromised}
        if not wanted:
            return True
        self.injector.link.wait_connected(10)
        self.injector.resend_compromised()
        while time.monotonic() < deadline:
            if wanted <= _sale_keys(self.db_path, COMPROMISED_SEQ_BASE):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Every process stops; a cluster's PostgreSQL stays up for the audit (:meth:`close`)."""
        for term in self.terms:
            if term.proc is not None:
                term.proc.terminate()
            for proxy in term.proxies:
                proxy.close()
        if self.injector is not None:
            self.injector.stop()
        if self.cluster is not None:
            self.cluster.stop_processes()
        for server in self.servers:
            server.terminate()
        if self.broker is not None:
            self.broker.terminate()

    def close(self) -> None:
        if self.cluster is not None:
            try:
                pg.close_pools()
            finally:  # never leave a PostgreSQL of ours running
                self.cluster.stop_database()

    def report(self, drained: bool, elapsed_s: float) -> dict[str, Any]:
        assert self.world is not None and self.plan is not None
        assert self.injector is not None
        journals, pending, reversals = {}, {}, {}
        for t in self.terms:
            journals[t.terminal_id], pending[t.terminal_id] = read_journal(str(t.db_path), t.terminal_id)
            reversals[t.terminal_id], unsent = read_reversals(str(t.db_path), t.terminal_id)
            pending[t.terminal_id] += unsent
        server = _read_only(self.db_path)
        try:
            result = audit(
                server,
                journals,
                {t.terminal_id: t.events for t in self.terms},
                pending=pending,
                start_balance_fen=self.world.start_balance_fen,
                offline_allowance_fen=self.world.offline_allowance_fen,
                max_clock_offset_ms=self.world.risk["max_clock_offset_ms"],
                compromised=[(c.terminal_id, c.seq, c.uuid) for c in self.injector.compromised],
                reversals=reversals,
            )
            duplicates = server.execute(
                "SELECT value FROM counters WHERE name = 'sales_duplicate'"
            ).fetchone()
        finally:
            server.close()
        compromised_by_variant = Counter(c.variant for c in self.injector.compromised)
        declines = Counter(
            e.get("reason") for t in self.terms for e in t.events if e.get("event") == "declined"
        )
        reversal_declines = Counter(
            e.get("reason") for t in self.terms for e in t.events if e.get("event") == "reversal_declined"
        )
        faults = dict(self.executed)
        faults["clock_skew"] = len(self.plan.clock_skew)
        out = {
            "seed": self.opts.seed,
            "ok": result.ok and drained,
            **result.to_json(),
            "faults": {k: faults.get(k, 0) for k in self.plan.fault_counts()},
            "faults_total": sum(faults.values()),
            "injected_messages": self.injector.sent,
            "not_injected": dict(self.not_injected),
            "compromised_variants": dict(sorted(compromised_by_variant.items())),
            "taps_sent": self.taps_sent,
            "taps_skipped_terminal_down": self.taps_skipped,
            "declines": dict(sorted((k or "?", v) for k, v in declines.items())),
            # reversals the terminals refused (no sale left to reverse, offline limit …)
            "reversal_declines": dict(sorted((k or "?", v) for k, v in reversal_declines.items())),
            # sales journaled just before a SIGKILL, announced at the restart ("断电前最后一笔交易已成功")
            "recovered_after_kill": sum(e.get("event") == "recovered" for t in self.terms for e in t.events),
            "duplicates_answered": int(duplicates[0]) if duplicates else 0,
            "drained": drained,
            "restarts": (
                self.cluster.restarts()
                if self.cluster is not None
                else {"server": sum(s.starts - 1 for s in self.servers)}
            ),
            "cluster": self.cluster is not None,
            "plan": self.plan.to_json(),
            "elapsed_s": round(elapsed_s, 1),
        }
        if not drained:
            out["violations"].append({"code": "not_drained", "detail": "outboxes did not empty in time"})
        return out


def _read_only(target: str | Path) -> sqlite3.Connection:
    """The server's database for reading: a SQLite file read-only, or a PostgreSQL URL."""
    if db.is_postgres(target):
        return db.connect(target)
    return sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=5)


def _sale_keys(path: str | Path, min_seq: int) -> set[tuple[str, int]]:
    """(terminal, seq) of the server's sales numbered from ``min_seq`` on."""
    try:
        conn = _read_only(path)
        try:
            rows = conn.execute("SELECT terminal_id, seq FROM sales WHERE seq >= ?", (min_seq,)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return set()
    return {(r[0], r[1]) for r in rows}


def _outbox(path: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(
                conn.execute(
                    "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM reversal_outbox)"
                ).fetchone()[0]
            )
        finally:
            conn.close()
    except sqlite3.Error:
        return 1  # being written or not there yet: not drained


def run_chaos(opts: ChaosOptions, say: Say = lambda line: None, keep: bool = False) -> dict[str, Any]:
    """One chaos run; the folder is removed afterwards unless it failed or ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=f"canteen-chaos-{opts.seed}-"))
    run = ChaosRun(opts, workdir, say)
    t0 = time.monotonic()
    try:
        try:
            run.setup()
            run.play()
            say("workload done; healing and draining")
            drained = run.drain()
        finally:
            run.stop()
        result = run.report(drained, time.monotonic() - t0)
    finally:
        run.close()
    if result["ok"] and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result["workdir"] = str(workdir)
    return result


def render(result: dict[str, Any]) -> str:
    faults = ", ".join(f"{k} {v}" for k, v in result["faults"].items() if v)
    lines = [
        f"混沌测试 chaos · seed {result['seed']} · {result['elapsed_s']} s"
        + (" · 集群 cluster: 3 NATS nodes, 2 server processes, PostgreSQL" if result.get("cluster") else ""),
        f"  故障 faults ({result['faults_total']}): {faults}",
        f"  刷卡 taps sent {result['taps_sent']} "
        f"(skipped, terminal down: {result['taps_skipped_terminal_down']})",
        f"  终端批准 approved       {result['approved']:>7}   (离线 offline {result['offline_sales']}, "
        f"重启后补报 recovered {result['recovered_after_kill']})",
        f"  服务器入账 applied      {result['applied']:>7}",
        f"  丢失 lost               {result['lost']:>7}",
        f"  重复入账 double applied {result['double_applied']:>7}",
        f"  重复已忽略 duplicates   {result['duplicates_answered']:>7}",
        f"  冲正 reversals          {result['reversals_approved']:>7}   (入账 applied "
        f"{result['reversals_applied']}, 丢失 lost {result['reversals_lost']}, "
        f"重复 doubled {result['reversals_doubled']}; 终端拒绝 refused "
        + (", ".join(f"{k} {v}" for k, v in result["reversal_declines"].items()) or "-")
        + ")",
        f"  账本合计 ledger sum     {result['ledger_sum_fen']:>7} fen",
        f"  透支 overdraft          {result['overdraft_fen']:>7} fen  "
        f"(限额允许 bound {result['overdraft_bound_fen']} fen)",
        f"  盗用密钥 compromised    {result['compromised_sent']:>7}   (已隔离 quarantined "
        f"{result['quarantined']}, 入账 applied {result['quarantined_applied']}, "
        f"误隔离 honest held {result['honest_quarantined']})",
        "  拒收消息 refused messages: "
        + (", ".join(f"{k} {v}" for k, v in result["rejections"].items()) or "-"),
        "  拒绝 declines: " + (", ".join(f"{k} {v}" for k, v in result["declines"].items()) or "-"),
    ]
    for v in result["violations"][:20]:
        lines.append(f"  ✘ {v['code']}: {v['detail']}")
    lines.append(
        f"  {'✔ 通过 PASS' if result['ok'] else '✘ 失败 FAIL'}"
        + (f" · kept {result['workdir']}" if "workdir" in result else "")
    )
    return "\n".join(lines)


def run_sweep(seeds: list[int], base: ChaosOptions, say: Say = lambda line: None) -> dict[str, Any]:
    """Run each seed; report seeds tried and failed and the totals."""
    runs = []
    for seed in seeds:
        result = run_chaos(replace(base, seed=seed), say)
        say(render(result))
        runs.append(result)
    totals: Counter[str] = Counter()
    for r in runs:
        totals.update(r["faults"])
    return {
        "seeds_tried": seeds,
        "seeds_failed": [r["seed"] for r in runs if not r["ok"]],
        "faults": dict(totals),
        "faults_total": sum(totals.values()),
        "approved": sum(r["approved"] for r in runs),
        "applied": sum(r["applied"] for r in runs),
        "offline_sales": sum(r["offline_sales"] for r in runs),
        "recovered_after_kill": sum(r["recovered_after_kill"] for r in runs),
        "duplicates_answered": sum(r["duplicates_answered"] for r in runs),
        "rejections": dict(sum((Counter(r["rejections"]) for r in runs), Counter())),
        "lost": sum(r["lost"] for r in runs),
        "double_applied": sum(r["double_applied"] for r in runs),
        "overdraft_fen": sum(r["overdraft_fen"] for r in runs),
        "overdraft_bound_fen": sum(r["overdraft_bound_fen"] for r in runs),
        "compromised_sent": sum(r["compromised_sent"] for r in runs),
        "quarantined": sum(r["quarantined"] for r in runs),
        "quarantined_applied": sum(r["quarantined_applied"] for r in runs),
        "honest_quarantined": sum(r["honest_quarantined"] for r in runs),
        "reversals_approved": sum(r["reversals_approved"] for r in runs),
        "reversals_applied": sum(r["reversals_applied"] for r in runs),
        "reversals_lost": sum(r["reversals_lost"] for r in runs),
        "reversals_doubled": sum(r["reversals_doubled"] for r in runs),
        "runs": [
            {
                k: r[k]
                for k in (
                    "seed",
                    "ok",
                    "approved",
                    "applied",
                    "lost",
                    "double_applied",
                    "ledger_sum_fen",
                    "overdraft_fen",
                    "overdraft_bound_fen",
                    "compromised_sent",
                    "quarantined",
                    "quarantined_applied",
                    "honest_quarantined",
                    "reversals_approved",
                    "reversals_applied",
                    "reversals_lost",
                    "reversals_doubled",
                    "faults_total",
                    "elapsed_s",
                )
            }
            for r in runs
        ],
    }
