"""Power cuts in the queue: a real ``canteen-terminal run`` process is SIGKILLed at random
points during bursts of taps, restarted, and finally drained through a real broker into a
real server. Every sale the terminal reported approved (right after the tap, or at the next
start for a sale cut off between its commit and its beep) is applied exactly once; no other
sale is applied."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from server.infra.db import open_db
from server.service import ServerService
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from tests.helpers import terminal as provision_terminal
from tests.process_support import EventsProcess

pytestmark = [pytest.mark.broker, pytest.mark.slow]


class TerminalProcess(EventsProcess):
    """``canteen-terminal run --events`` as a child process; taps in, events out."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        super().__init__(
            [sys.executable, "-m", "terminal.cli", "run", "--config", str(config_path), "--events"], log_path
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait()


def _pending(db_path: Path) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


def test_sales_survive_sigkill_and_are_applied_exactly_once_iff_reported(broker, tmp_path) -> None:  # noqa: ANN001
    rng = random.Random(20260106)
    service = ServerService(broker.url, config={"HOME": str(tmp_path / "server")}).start()
    try:
        db = open_db(service.app.config["DATABASE"])
        world = demo_world(db, int(time.time() * 1000), diners=30)
        key = service.app.extensions["canteen_server_key"]
        creds = provision_terminal(db, "C01", int(time.time() * 1000), key.public_hex)
        config = {
            **creds.to_json(),
            "broker_url": broker.url,
            "server_url": service.base_url,
            "db_path": str(tmp_path / "terminal.sqlite"),
            "reader": "stdin",
            "batch_size": 20,
            "ack_timeout_s": 2.0,
            "heartbeat_s": 1.0,
        }
        config_path = tmp_path / "terminal.json"
        config_path.write_text(json.dumps(config))
        log_path = tmp_path / "terminal.log"

        all_events: list[dict[str, Any]] = []
        kills = 0
        for round_no in range(6):
            proc = TerminalProcess(config_path, log_path)
            assert wait_until(lambda p=proc: p.has(event="link", online=True), 30), (
                "terminal never got in sync"
            )
            taps = [
                f"{rng.choice(world.diners).card_id} shop {rng.randint(100, 900)}"
                for _ in range(rng.randint(20, 60))
            ]
            proc.send(taps)
            # let some of the burst through, then pull the plug somewhere in the middle
            cut_after = rng.randint(0, len(taps))
            wait_until(
                lambda p=proc, n=cut_after: (
                    sum(e["event"] in ("approved", "declined") for e in p.events) >= n
                ),
                10,
            )
            time.sleep(rng.uniform(0, 0.02))
            proc.kill()
            kills += 1
            all_events += proc.events
            assert not any(e["event"] == "garbage" for e in proc.events), f"round {round_no}: torn event line"

        # the last start: nothing more is tapped; everything journaled drains to the server
        proc = TerminalProcess(config_path, log_path)
        assert wait_until(lambda: proc.has(event="link", online=True), 30)
        assert wait_until(lambda: _pending(Path(config["db_path"])) == 0, 60), "outbox did not drain"
        proc.stop()
        all_events += proc.events

        reported = [e["uuid"] for e in all_events if e["event"] in ("approved", "recovered")]
        server = db.execute(
            "SELECT uuid, status FROM sales WHERE terminal_id = ?", (creds.terminal_id,)
        ).fetchall()
        applied = [u for u, status in server if status == "applied"]
        count = lambda kind: sum(e["event"] == kind for e in all_events)  # noqa: E731
        print(f"reported={len(set(reported))} recovered={count('recovered')} declined={count('declined')}")
        assert kills == 6 and len(set(reported)) > 0
        assert sorted(applied) == sorted(set(reported)), (
            "applied sales differ from the sales reported approved"
        )
        assert len(server) == len(applied), "the server rejected a sale the terminal approved"
        # exactly once: one ledger transaction per applied sale
        ledger_sales = db.execute(
            "SELECT count(*) FROM txns WHERE kind = 'sale' AND ref LIKE ?", (f"{creds.terminal_id}/%",)
        ).fetchone()[0]
        assert ledger_sales == len(applied)
        # and the terminal's own journal agrees: every journaled sale was reported
        tconn = sqlite3.connect(config["db_path"])
        journaled = {r[0] for r in tconn.execute("SELECT uuid FROM journal")}
        tconn.close()
        assert journaled == set(reported)
        db.close()
    finally:
        service.stop()
