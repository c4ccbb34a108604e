"""What the signed-update tests share: a server with a release key and one terminal run by
the real launcher as a child process, its MQTT link through a proxy that can cut it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from server.cli.updates import collect_files
from server.infra.db import open_db, write_txn
from server.registry import updates
from server.registry.terminals import provision
from server.service import ServerService
from shared.release import ReleaseKey, build_bundle
from simulator.harness.netproxy import NetProxy
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from terminal.update_layout import Layout
from tests.process_support import ROOT, EventsProcess


class LauncherProcess(EventsProcess):
    """``python -m terminal.launcher --config … --events`` in its own process group (so a
    power cut kills the launcher and the agent together); taps in on stdin, events out."""

    wait_s = 60

    def __init__(self, config_path: Path, log_path: Path) -> None:
        super().__init__(
            [sys.executable, "-m", "terminal.launcher", "--config", str(config_path), "--events"],
            log_path,
            start_new_session=True,
        )

    def tap(self, lines: list[str], timeout_s: float = 15) -> None:
        """Tap and wait until each tap was decided (approved or declined)."""
        before = self.count(event="approved") + self.count(event="declined")
        self.send(lines)
        assert wait_until(
            lambda: self.count(event="approved") + self.count(event="declined") >= before + len(lines),
            timeout_s,
        ), "taps not decided"

    def power_cut(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.wait()


class Site:
    """A server (in-process, real broker), a release key, one provisioned terminal whose
    configuration names an update folder, and the proxy its MQTT link goes through."""

    def __init__(self, broker: Any, tmp_path: Path, **config: Any) -> None:
        self.tmp = tmp_path
        self.service = ServerService(broker.url, config={"HOME": str(tmp_path / "server")}).start()
        self.app = self.service.app
        self.db = open_db(self.app.config["DATABASE"])
        now = int(time.time() * 1000)
        self.world = demo_world(self.db, now, diners=30)
        key = self.app.extensions["canteen_server_key"]
        with write_txn(self.db):
            self.creds = provision(self.db, "C01", now, key.public_hex, f"T-up-{uuid.uuid4().hex[:8]}")
        self.release = ReleaseKey.generate()
        Path(self.app.config["RELEASE_PUBLIC_KEY_FILE"]).write_text(self.release.public_hex + "\n")
        self.proxy = NetProxy(broker.port)
        self.layout = Layout(tmp_path / "updates")
        self.config_path = tmp_path / "terminal.json"
        self.db_path = tmp_path / "terminal.sqlite"
        self.config = {
            **self.creds.to_json(),
            "broker_url": f"mqtt://127.0.0.1:{self.proxy.port}",
            "server_url": self.service.base_url,
            "db_path": str(self.db_path),
            "reader": "stdin",
            "batch_size": 20,
            "ack_timeout_s": 2.0,
            "heartbeat_s": 1.0,
            "release_public_key": self.release.public_hex,
            "update_root": str(self.layout.root),
            "update_quiet_s": 1.0,
            "update_health_s": 30.0,
            **config,
        }
        self.config_path.write_text(json.dumps(self.config))
        self.log_path = tmp_path / "terminal.log"
        self._card = 0

    @property
    def terminal_id(self) -> str:
        return self.creds.terminal_id

    def launch(self) -> LauncherProcess:
        return LauncherProcess(self.config_path, self.log_path)

    def taps(self, n: int) -> list[str]:
        """``n`` shop sales of typed amounts, each on the next diner's card."""
        out = []
        for _ in range(n):
            diner = self.world.diners[self._card % len(self.world.diners)]
            self._card += 1
            out.append(f"{diner.card_id} shop {300 + 10 * self._card}")
        return out

    # --- bundles and offers -----------------------------------------------------------------

    def bundle(
        self,
        version: str,
        *,
        source: Path = ROOT,
        key: ReleaseKey | None = None,
        firmware: bool = False,
        files: dict[str, bytes] | None = None,
    ) -> bytes:
        kind = "firmware" if firmware else "terminal"
        return build_bundle(
            kind, version, files or collect_files(source, kind), key or self.release, int(time.time() * 1000)
        )

    def offer(self, data: bytes, *, checked: bool = True, canteen: str | None = "C01") -> dict[str, Any]:
        """Keep and offer a bundle as ``update-offer`` does; ``checked=False`` skips the
        server's own check against the release key, as a compromised server would."""
        with write_txn(self.db):
            record = updates.add_bundle(
                self.db,
                self.app.config["UPDATES_DIR"],
                data,
                self.release.public_hex if checked else None,
                int(time.time() * 1000),
            )
            return updates.offer(
                self.db, record["kind"], record["version"], canteen, 100, int(time.time() * 1000)
            )

    def withdraw_all(self) -> None:
        with write_txn(self.db):
            self.db.execute("UPDATE update_offers SET withdrawn_at_ms = 1 WHERE withdrawn_at_ms IS NULL")

    def reports(self, kind: str = "terminal") -> list[tuple[str, str, str | None]]:
        return [
            (r[0], r[1], r[2])
            for r in self.db.execute(
                "SELECT version, state, code FROM update_reports WHERE terminal_id = ? AND kind = ? "
                "ORDER BY sent_at_ms, received_at_ms",
                (self.terminal_id, kind),
            )
        ]

    def software(self) -> str | None:
        row = self.db.execute(
            "SELECT last_status_json FROM terminals WHERE id = ?", (self.terminal_id,)
        ).fetchone()
        return json.loads(row[0]).get("software") if row and row[0] else None

    # --- the money ----------------------------------------------------------------------------

    def pending(self) -> int:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        finally:
            conn.close()

    def applied(self) -> list[str]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT uuid FROM sales WHERE terminal_id = ? AND status = 'applied'", (self.terminal_id,)
            )
        ]

    def stop(self) -> None:
        self.proxy.close()
        self.service.stop()
        self.db.close()


def patched_tree(tmp: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of the terminal's code with text replaced in some files: a release that differs."""
    tree = tmp / "src"
    for root in ("terminal", "hardware", "shared"):
        shutil.copytree(ROOT / root, tree / root, ignore=shutil.ignore_patterns("__pycache__", "stubs"))
    for rel, (old, new) in edits.items():
        path = tree / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{rel}: {old!r} not found"
        path.write_text(text.replace(old, new), encoding="utf-8")
    return tree


def sold(events: list[dict[str, Any]]) -> list[str]:
    """Every sale a terminal told its diner was paid (now, or at the next start)."""
    return [e["uuid"] for e in events if e.get("event") in ("approved", "recovered")]
