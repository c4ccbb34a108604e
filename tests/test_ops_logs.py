"""Services and logs, with real processes: one sale followed by its id through the
terminal's and the server's JSON logs to its statement line; HTTP requests carry a request
id; the server tells systemd it is ready and pings the watchdog only while healthy."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from server.infra.db import open_db
from shared.protocol import ServerKey
from shared.sd_notify import Watchdog, notify, watchdog_interval_s
from simulator.chaos.procs import ServerProcess, TerminalProcess
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from tests.helpers import terminal as provision_terminal
from tests.process_support import free_port, server_cli


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a process's log file (other lines — a command's own output —
    are skipped)."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _home(tmp_path: Path) -> tuple[Path, Any, Any]:
    home = tmp_path / "server"
    assert server_cli("--home", str(home), "init").returncode == 0
    db = open_db(home / "server" / "canteen.sqlite")
    now = int(time.time() * 1000)
    world = demo_world(db, now, diners=5)
    key = ServerKey.from_hex((home / "server" / "server_key.hex").read_text().strip())
    creds = provision_terminal(db, "C01", now, key.public_hex)
    db.close()
    return home, world, creds


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.sqlite_only("server processes on a SQLite file (PostgreSQL: test_chaos_cluster.py)")
def test_one_sale_is_traced_by_its_id_through_terminal_and_server_json_logs(
    broker,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CANTEEN_LOG_JSON", "1")  # both processes: the option's environment variable
    home, world, creds = _home(tmp_path)
    server = ServerProcess(home, broker.url, free_port()).start()
    config_path = tmp_path / "terminal.json"
    config_path.write_text(
        json.dumps(
            {
                **creds.to_json(),
                "broker_url": broker.url,
                "server_url": server.base_url,
                "db_path": str(tmp_path / "terminal.sqlite"),
                "reader": "stdin",
                "heartbeat_s": 1.0,
            }
        )
    )
    events: list[dict[str, Any]] = []
    term = TerminalProcess(config_path, tmp_path / "terminal.log", events).start()
    try:
        assert wait_until(lambda: any(e.get("event") == "link" and e.get("online") for e in events), 30)
        term.send([f"{world.diners[0].card_id} shop 350"])
        assert wait_until(lambda: any(e.get("event") == "approved" for e in events), 15)
        sale_id = f"{creds.terminal_id}/{next(e for e in events if e['event'] == 'approved')['seq']}"
        conn = sqlite3.connect(f"file:{tmp_path / 'terminal.sqlite'}?mode=ro", uri=True)
        assert wait_until(lambda: conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0, 15)
        conn.close()
        # an HTTP request names its own request id, and gets it back
        req = urllib.request.Request(
            server.base_url + "/api/v1/health", headers={"X-Request-Id": "trace-me-1"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["X-Request-Id"] == "trace-me-1"
        server_log = home / "server.log"
        assert wait_until(
            lambda: any(r.get("request_id") == "trace-me-1" for r in _json_lines(server_log)), 30
        )
    finally:
        term.terminate()
        server.terminate()

    terminal_lines = _json_lines(tmp_path / "terminal.log")
    server_lines = _json_lines(home / "server.log")
    for r in terminal_lines + server_lines:
        assert {"time", "level", "logger", "message"} <= set(r), r
        assert r["time"].endswith("+08:00")
    # the tap, the batch that carried it and its ack on the terminal …
    tapped = [r for r in terminal_lines if r.get("sale_id") == sale_id]
    assert tapped and tapped[0]["amount_fen"] == 350 and "approved" in tapped[0]["message"]
    assert any(sale_id in r.get("sale_ids", []) for r in terminal_lines)
    assert any(r.get("sales", {}).get(sale_id) == "applied" for r in terminal_lines)
    # … and its ingest and apply on the server
    ingested = [r for r in server_lines if sale_id in r.get("sales", {})]
    assert ingested and ingested[0]["sales"][sale_id] == "applied"
    access = next(r for r in server_lines if r.get("request_id") == "trace-me-1")
    assert access["http_route"] == "/api/v1/health" and access["http_status"] == 200
    # … on to its ledger entries and (not yet settled) statement
    traced = server_cli("--home", str(home), "trace-sale", sale_id, "--json")
    assert traced.returncode == 0, traced.stderr
    doc = json.loads(traced.stdout)
    assert doc["sale"]["status"] == "applied" and sum(e["amount_fen"] for e in doc["entries"]) == 350
    assert doc["statement"]["state"] == "open"


@pytest.mark.broker
@pytest.mark.slow
def test_server_tells_systemd_it_is_ready_pings_the_watchdog_and_says_stopping(
    broker,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home, _, _ = _home(tmp_path)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))  # what systemd passes a Type=notify service
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1: ping every 0.5 s
    server = ServerProcess(home, broker.url, free_port()).start()
    try:
        got = [sock.recv(4096).decode() for _ in range(3)]
        assert got[0] == "READY=1" and got[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        rest = []
        while "STOPPING=1" not in rest:
            rest.append(sock.recv(4096).decode())
    finally:
        server.terminate()
        sock.close()


def test_watchdog_pings_only_while_healthy(tmp_path: Path) -> None:
    sock_path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "100000"}
    healthy = [True]
    dog = Watchdog(lambda: healthy[0], env).start()
    try:
        assert sock.recv(100) == b"WATCHDOG=1"
        healthy[0] = False  # e.g. the ingest thread died
        time.sleep(0.2)
        while True:  # drain what was sent before
            try:
                sock.recv(100)
            except TimeoutError:
                break
        with pytest.raises(TimeoutError):
            sock.recv(100)
    finally:
        dog.stop()
        sock.close()
    # outside systemd, nothing happens and nothing fails
    assert notify("READY=1", {}) is False
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
