"""Operations with real processes (issue 15): a locked Mosquitto, ``canteen-server run``
behind HTTPS (a test CA, :mod:`simulator.harness.tls`), and ``canteen-terminal`` processes
enrolled with one-time codes.

In order, on one installation: enrolment over HTTPS and its refusals (a second use, a wrong
code, an expired one, a plain-http address, an untrusted certificate — which spends
nothing); taps reaching the server, the fleet view, the server's ``/metrics`` and the
terminal's exporter parsed with prometheus_client's parser (and the Grafana dashboard
asking only for metrics that exist); a key rotation while the terminal holds unsent sales
(all applied once, the broker's password switched); alerts from a terminal with a wrong
clock and from one killed during meal hours, in ``fleet --json`` and the server's log;
revocation holding at once (the broker refuses the terminal, its signed requests get 401);
wrong codes rate-limited.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.infra.auth import create_token
from server.infra.db import open_db, write_txn
from server.registry import broker_users
from server.registry.canteens import update as update_canteen
from shared.broker import MosquittoBroker
from shared.clock import SystemClock, china_datetime
from shared.metrics import parse
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import broker_password
from simulator.harness.netproxy import NetProxy
from simulator.harness.tls import TlsFront, make_test_ca
from simulator.harness.world import demo_world, meal
from simulator.waiting import wait_until
from terminal.server_http import ServerHttp, ServerRefused
from tests.process_support import ROOT, free_port

pytestmark = [
    pytest.mark.sqlite_only("server processes on a SQLite file (PostgreSQL: test_chaos_cluster.py)"),
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary"),
]

BIN = Path(sys.executable).parent
T = 60.0  # generous: 2 cores shared with other runs
DASHBOARD = ROOT / "deploy" / "grafana" / "canteen-fleet.json"


def _text(log: Path) -> str:
    """A live log file: a read may land in the middle of a character being written."""
    return log.read_text(errors="replace")


@dataclass
class Term:
    terminal_id: str
    config: Path
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def tap(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()

    def secret(self) -> bytes:
        return bytes.fromhex(json.loads(self.config.read_text())["secret_hex"])


@dataclass
class Ops:
    tmp: Path
    home: Path
    env: dict[str, str]
    broker: MosquittoBroker
    server: subprocess.Popen[bytes]
    server_log: Path
    tls: TlsFront
    ca_file: Path
    db: str
    auditor: str
    cards: list[str]
    terms: list[Term] = field(default_factory=list)
    proxies: list[NetProxy] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = "canteen-terminal" if args[0] in ("enrol", "run", "status") else "canteen-server"
        argv = [str(BIN / exe), *args]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=T * 2)
        if check:
            assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    def code(self, canteen: str = "C01", broker_port: int | None = None) -> dict[str, Any]:
        port = broker_port or self.broker.port
        return json.loads(
            self.cli("provision-terminal", canteen, "--broker", f"mqtt://127.0.0.1:{port}", "--json").stdout
        )

    def enrol(
        self, code: str, name: str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        config = self.tmp / "etc" / f"{name}.json"
        args = ["enrol", "--server", self.tls.url, "--config", str(config), "--ca-file", str(self.ca_file)]
        args += ["--set", "heartbeat_s=0.5", "--set", "clock_probe_s=2", "--set", f"db_path={name}.sqlite"]
        return self.cli(*args, *extra, code, check=check)

    def start(self, name: str, terminal_id: str) -> Term:
        config = self.tmp / "etc" / f"{name}.json"
        port = free_port()
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(BIN / "canteen-terminal"),
                    "run",
                    "--config",
                    str(config),
                    "--events",
                    "--metrics-port",
                    str(port),
                ],
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        term = Term(terminal_id, config, proc, port, log)
        self.terms.append(term)
        return term

    def fleet(self) -> dict[str, Any]:
        return json.loads(self.cli("fleet", "--json").stdout)

    def row(self, terminal_id: str) -> dict[str, Any]:
        return next(t for t in self.fleet()["terminals"] if t["terminal_id"] == terminal_id)

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return [tuple(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def scrape(self, url: str, token: str | None = None) -> dict[str, list[Any]]:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        samples: dict[str, list[Any]] = {}
        for family in parse(text):
            # a family with labels and no sample yet is still declared (HELP/TYPE): named here
            kind = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(
                family.type, ("",)
            )
            for suffix in kind:
                samples.setdefault(family.name + suffix, [])
            for s in family.samples:
                samples.setdefault(s.name, []).append(s)
        return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    tmp = tmp_path_factory.mktemp("ops")
    home = tmp / "home"
    app = create_app({"HOME": str(home), "TESTING": True})
    now = SystemClock().now_ms()
    conn = open_db(app.config["DATABASE"])
    world = demo_world(conn, now, diners=6, quarter=_quarter(now))
    with write_txn(conn):  # canteen C02 serves all day: "meal hours" whenever this test runs
        update_canteen(conn, "C02", now, config={"meals": {"lunch": meal("00:00", "24:00", 1200)}})
        auditor = create_token(conn, "auditor", now, label="prometheus")
    conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANTEEN_")}
    env.update(PYTHONPATH=str(ROOT), CANTEEN_HOME=str(home))
    subprocess.run([str(BIN / "canteen-server"), "init"], env=env, check=True, capture_output=True, timeout=T)
    files = broker_users.BrokerFiles.from_config(app.config)
    broker = MosquittoBroker(password_file=str(files.password_file), acl_file=str(files.acl_file)).start()
    env.update(
        CANTEEN_MQTT_RELOAD_COMMAND=f"kill -HUP {broker.pid}",
        CANTEEN_FLEET_WATCH_S="1",
        CANTEEN_FLEET_OFFLINE_ALERT_S="3",
        CANTEEN_FLEET_STALE_S="5",
    )
    http_port = free_port()
    server_log = tmp / "server.log"
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            [str(BIN / "canteen-server"), "run", "--broker", broker.url, "--port", str(http_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    ca = make_test_ca(tmp / "tls")
    tls = TlsFront(http_port, ca)
    ops = Ops(
        tmp,
        home,
        env,
        broker,
        server,
        server_log,
        tls,
        ca.ca_file,
        app.config["DATABASE"],
        auditor,
        [d.card_id for d in world.diners],
    )
    try:
        assert wait_until(lambda: _up(http_port), T, 0.2), _text(server_log)
        yield ops
    finally:
        for term in ops.terms:
            if term.proc.poll() is None:
                term.proc.terminate()
                try:
                    term.proc.wait(15)
                except subprocess.TimeoutExpired:
                    term.proc.kill()
        server.terminate()
        server.wait(15)
        tls.close()
        for p in ops.proxies:
            p.close()
        broker.stop()


def _quarter(now_ms: int) -> str:
    d = china_datetime(now_ms)
    return f"{d.year}Q{(d.month - 1) // 3 + 1}"


def _up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).close()
    except OSError:
        return False
    return True


def test_enrolment_over_https_and_its_refusals(ops: Ops) -> None:
    issued = ops.code("C01")
    assert len(issued["code"]) == 19 and issued["terminal_id"].startswith("T")
    # an untrusted certificate: refused by the terminal before anything is sent; nothing spent
    config = ops.tmp / "etc" / "pi1.json"
    untrusted = ops.cli(
        "enrol", "--server", ops.tls.url, "--config", str(config), issued["code"], check=False
    )
    assert untrusted.returncode == 2 and "server_unreachable" in untrusted.stderr, untrusted.stderr
    assert not config.exists()
    plain = ops.cli(
        "enrol", "--server", "http://10.1.2.3:8080", "--config", str(config), issued["code"], check=False
    )
    assert plain.returncode == 2 and "insecure_url" in plain.stderr
    typo = ops.enrol(issued["code"][:-1], "pi1", check=False)  # caught before the server is asked
    assert typo.returncode == 2 and "enrolment_code_invalid" in typo.stderr

    t0 = time.monotonic()
    ops.enrol(issued["code"], "pi1")
    print(f"enrol over HTTPS (a process start included): {time.monotonic() - t0:.2f} s")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    written = json.loads(config.read_text())
    assert written["terminal_id"] == issued["terminal_id"] and len(written["secret_hex"]) == 64
    assert written["server_url"] == ops.tls.url and written["ca_file"] == str(ops.ca_file)

    again = ops.enrol(issued["code"], "pi1-again", check=False)
    assert again.returncode == 2 and "enrolment_code_used" in again.stderr
    assert again.stderr.startswith("错误：注册码已使用过（enrolment_code_used）")
    wrong = ops.enrol("0000-0000-0000-0000", "pi1-wrong", check=False)
    assert wrong.returncode == 2 and "enrolment_code_invalid" in wrong.stderr
    stale = ops.code("C01")
    conn = sqlite3.connect(ops.db)
    conn.execute("UPDATE enrolments SET expires_at_ms = 0 WHERE terminal_id = ?", (stale["terminal_id"],))
    conn.commit()
    conn.close()
    expired = ops.enrol(stale["code"], "pi-late", check=False)
    assert expired.returncode == 2 and "enrolment_code_expired" in expired.stderr
    log = _text(ops.server_log)
    for refusal in ("enrolment_code_used", "enrolment_code_invalid", "enrolment_code_expired"):
        assert f"WARNING enrolment_refused: {refusal}" in log, log[-2000:]
    assert ops.query("SELECT count(*) FROM terminals") == [(1,)]


def test_taps_reach_the_server_and_the_fleet_and_metrics_show_them(ops: Ops) -> None:
    tid = json.loads((ops.tmp / "etc" / "pi1.json").read_text())["terminal_id"]
    term = ops.start("pi1", tid)
    assert wait_until(lambda: ops.row(tid)["status"] == "online", T, 0.5), _text(term.log)[-2000:]
    for card in ops.cards[:3]:
        term.tap(f"{card} shop 350")
    assert wait_until(
        lambda: (
            ops.query("SELECT count(*) FROM sales WHERE terminal_id = ? AND status = 'applied'", tid)
            == [(3,)]
        ),
        T,
        0.5,
    )
    assert wait_until(lambda: ops.row(tid)["unsent_sales"] == 0, T, 0.5)
    row = ops.row(tid)
    assert row["online"] and row["software"].startswith("canteen-terminal/")
    assert row["disk_free_bytes"] > 0 and row["disk_total_bytes"] >= row["disk_free_bytes"]
    assert row["journal_bytes"] > 0 and row["last_sync_ms"] and row["clock_offset_ms"] is not None
    text = ops.cli("fleet").stdout
    assert tid in text and "在线 online" in text

    server = ops.scrape(f"http://127.0.0.1:{_http_port(ops)}/metrics", ops.auditor)
    assert value(server, "canteen_sales_ingested_total", result="applied") >= 3
    assert value(server, "canteen_ingest_latency_seconds_count") >= 1
    assert value(server, "canteen_acks_published_total") >= 1
    assert value(server, "canteen_deltas_published_total") >= 1
    assert value(server, "canteen_terminals_online") >= 1
    assert value(server, "canteen_http_requests_total", route="/api/v1/enrol", status="200") >= 1
    assert value(server, "canteen_http_requests_total", route="/api/v1/enrol", status="403") >= 2
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        ops.scrape(f"http://127.0.0.1:{_http_port(ops)}/metrics")
    assert anonymous.value.code == 401

    mine = ops.scrape(f"http://127.0.0.1:{term.metrics_port}/metrics")
    assert value(mine, "canteen_terminal_taps_total", result="approved") == 3
    assert value(mine, "canteen_terminal_sales_total", mode="online") == 3
    assert value(mine, "canteen_terminal_unsent_sales") == 0
    assert value(mine, "canteen_terminal_online") == 1
    term.tap("NO-SUCH-CARD shop 350")
    assert wait_until(
        lambda: (
            value(
                ops.scrape(f"http://127.0.0.1:{term.metrics_port}/metrics"), "canteen_terminal_declines_total"
            )
            == 1
        ),
        T,
        0.2,
    )

    # every metric the Grafana dashboard asks for is one of these processes' metrics
    names = set(server) | set(mine)
    asked = _dashboard_metrics()
    assert asked and asked <= names, asked - names


def _http_port(ops: Ops) -> int:
    return ops.tls.target[1]


def _dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return {m for e in exprs for m in re.findall(r"\b(canteen_[a-z_]+)\b", e)}


def test_a_key_rotation_with_unsent_sales_loses_none(ops: Ops) -> None:
    proxy = NetProxy(ops.broker.port)
    ops.proxies.append(proxy)
    issued = ops.code("C01", broker_port=proxy.port)
    ops.enrol(issued["code"], "pi2")
    tid = issued["terminal_id"]
    term = ops.start("pi2", tid)
    assert wait_until(lambda: ops.row(tid)["status"] == "online", T, 0.5), _text(term.log)[-2000:]
    old = term.secret()

    proxy.cut()  # the canteen's network goes: the terminal sells from its cache
    assert wait_until(lambda: ops.row(tid)["status"] == "offline", T, 0.5)
    for card in ops.cards[:4]:
        term.tap(f"{card} shop 100")
    assert wait_until(lambda: _events(term).count("approved") == 4, T, 0.2), _text(term.log)[-2000:]
    assert ops.query("SELECT count(*) FROM sales WHERE terminal_id = ?", tid) == [(0,)]

    started = json.loads(ops.cli("rotate-terminal", tid, "--json").stdout)
    t0 = time.monotonic()
    proxy.heal()
    # back online: offered the key at its first heartbeat, it switches, the server completes
    # the rotation and reloads the broker, which drops the old password; the terminal comes
    # back with the new one and its outbox drains
    assert wait_until(
        lambda: (
            ops.query("SELECT count(*) FROM sales WHERE terminal_id = ? AND status = 'applied'", tid)
            == [(4,)]
        ),
        T,
        0.5,
    ), _text(term.log)[-3000:]
    print(f"rotation: network back to 4 unsent sales applied: {time.monotonic() - t0:.1f} s")
    assert wait_until(
        lambda: ops.query("SELECT next_secret_hex FROM terminals WHERE id = ?", tid) == [(None,)], T, 0.5
    )
    new = term.secret()
    assert new != old and stat.S_IMODE(term.config.stat().st_mode) == 0o600
    [(current, previous)] = ops.query(
        "SELECT secret_hex, previous_secret_hex FROM terminals WHERE id = ?", tid
    )
    assert (current, previous) == (new.hex(), old.hex())
    assert started["next_key_id"] != started["current_key_id"]
    assert ops.query("SELECT count(*), count(DISTINCT seq) FROM sales WHERE terminal_id = ?", tid) == [(4, 4)]
    assert wait_until(
        lambda: ops.row(tid)["status"] == "online" and ops.row(tid)["unsent_sales"] == 0, T, 0.5
    )
    # the broker now knows only the new password
    assert _broker_refuses(ops, tid, old)
    assert not _broker_refuses(ops, tid, new)


def _events(term: Term) -> list[str]:
    out = []
    for line in _text(term.log).splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line).get("event"))
            except ValueError:
                continue
    return out


def _broker_refuses(ops: Ops, terminal_id: str, secret: bytes) -> bool:
    """Whether the broker refuses this terminal id with the password derived from ``secret``
    (a probe under another client id would be refused anyway: the id is the user name)."""
    address = BrokerAddress("127.0.0.1", ops.broker.port, terminal_id, broker_password(secret))
    probe = MqttLink(terminal_id, address, backoff_max_s=0.5).start()
    try:
        assert wait_until(lambda: probe.connected or probe.refusals > 0, T, 0.05)
        return probe.refusals > 0 and not probe.connected
    finally:
        probe.stop()


def test_alerts_for_a_wrong_clock_and_a_terminal_offline_in_meal_hours(ops: Ops) -> None:
    issued = ops.code("C02")
    ops.enrol(issued["code"], "pi3", "--set", "clock_offset_ms=600000")  # its clock 10 min fast
    tid = issued["terminal_id"]
    term = ops.start("pi3", tid)

    def codes() -> set[str]:
        return {a["code"] for a in ops.fleet()["alerts"] if a["terminal_id"] == tid}

    assert wait_until(lambda: "clock_offset_high" in codes(), T, 0.5), ops.row(tid)
    term.proc.kill()  # SIGKILL: the broker publishes its last will, "offline"
    term.proc.wait(10)
    assert wait_until(lambda: "terminal_offline" in codes(), T, 0.5), ops.row(tid)
    log = _text(ops.server_log)
    assert wait_until(lambda: f"WARNING clock_offset_high: {tid}" in _text(ops.server_log), T, 0.5), log[
        -2000:
    ]
    assert wait_until(lambda: f"WARNING terminal_offline: {tid}" in _text(ops.server_log), T, 0.5)
    data = ops.fleet()
    mine = [a for a in data["alerts"] if a["terminal_id"] == tid]
    assert all(a["canteen_id"] == "C02" and a["detail"] for a in mine)
    api = urllib.request.Request(
        f"http://127.0.0.1:{_http_port(ops)}/api/v1/fleet", headers={"Authorization": f"Bearer {ops.auditor}"}
    )
    with urllib.request.urlopen(api, timeout=10) as resp:
        served = json.loads(resp.read())
    assert {a["code"] for a in served["alerts"] if a["terminal_id"] == tid} >= {
        "clock_offset_high",
        "terminal_offline",
    }


def test_revocation_holds_at_once(ops: Ops) -> None:
    term = next(t for t in ops.terms if t.config.stem == "pi1")
    tid, secret = term.terminal_id, term.secret()
    assert not _broker_refuses(ops, tid, secret)
    t0 = time.monotonic()
    out = ops.cli("revoke-terminal", tid)
    assert "reloaded" in out.stderr  # MQTT_RELOAD_COMMAND ran: no person typed kill -HUP
    assert _broker_refuses(ops, tid, secret)
    print(f"revocation: command to the broker refusing the terminal: {time.monotonic() - t0:.2f} s")
    assert wait_until(
        lambda: (
            value(ops.scrape(f"http://127.0.0.1:{term.metrics_port}/metrics"), "canteen_terminal_online") == 0
        ),
        T,
        0.5,
    )
    assert ops.row(tid)["status"] == "revoked"
    # its signed HTTP requests: 401 terminal_revoked, through the same HTTPS front
    http = ServerHttp(ops.tls.url, tid, secret, None, ca_file=str(ops.ca_file))  # type: ignore[arg-type]
    with pytest.raises(ServerRefused) as refused:
        http.snapshot(SystemClock().now_ms())
    cause = refused.value.__cause__
    assert isinstance(cause, urllib.error.HTTPError) and cause.code == 401
    assert refused.value.code == "terminal_revoked"


def test_wrong_codes_are_rate_limited(ops: Ops) -> None:
    """Last: it locks this machine's address out of enrolment for the window."""
    good = ops.code("C01")
    # one wrong code was typed in the first test: four more make the five the window allows
    seen = [ops.enrol(f"ZZZZ-ZZZZ-ZZZZ-ZZZ{i}", f"pi-guess{i}", check=False).stderr for i in range(5)]
    assert ["enrolment_code_invalid" in e for e in seen] == [True] * 4 + [False]
    assert "enrolment_rate_limited" in seen[4]
    limited = ops.enrol(good["code"], "pi-limited", check=False)
    assert limited.returncode == 2 and "enrolment_rate_limited" in limited.stderr
    assert "WARNING enrolment_refused: enrolment_rate_limited" in _text(ops.server_log)
