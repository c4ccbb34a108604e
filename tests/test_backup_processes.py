"""Backup under load and restore, with real processes: ``canteen-server run``, a real broker,
``canteen-terminal run`` taking a steady stream of taps, and ``canteen-server backup`` /
``restore`` / ``check`` as an operator runs them.

What a restore loses, measured: the sales the server acknowledged after the backup's
snapshot are not in the restored database, and the terminal no longer sends them (they left
its outbox with their acks). The restored server's backup mark names the restore; the
terminal puts those sales back in its outbox and sends them again; each is applied once.
Meanwhile the terminal's journal was pruned only up to what the oldest kept backup holds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from server.downstream.backup_marks import DELTA_JUMP
from server.infra.db import open_db
from shared.protocol import ServerKey
from simulator.chaos.procs import ServerProcess, TerminalProcess
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from tests.helpers import terminal as provision_terminal
from tests.process_support import free_port, server_cli

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.sqlite_only("backs up and restores the SQLite file (PostgreSQL: its own base backups)"),
]


def _journal(db_path: Path) -> dict[int, tuple[str, str]]:
    """seq -> (uuid, status) as the terminal's journal has it right now."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT seq, uuid, status FROM journal")}
    finally:
        conn.close()


def _outbox(db_path: Path) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


def _server_sales(db: Path, terminal_id: str) -> dict[int, tuple[str, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            r[0]: (r[1], r[2])
            for r in conn.execute("SELECT seq, uuid, status FROM sales WHERE terminal_id = ?", (terminal_id,))
        }
    finally:
        conn.close()


def test_backup_during_a_burst_restore_and_recover_acknowledged_sales_from_the_terminal(
    broker,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CANTEEN_BACKUP_MARK_POLL_S", "0.5")  # the server process sees backups fast
    home = tmp_path / "live"
    assert server_cli("--home", str(home), "init").returncode == 0
    db = open_db(home / "server" / "canteen.sqlite")
    now = int(time.time() * 1000)
    world = demo_world(db, now, diners=30)
    public_key = ServerKey.from_hex((home / "server" / "server_key.hex").read_text().strip()).public_hex
    creds = provision_terminal(db, "C01", now, public_key)
    db.close()
    offline = tmp_path / "offline"
    offline.mkdir()
    assert server_cli("--home", str(home), "backup-key", str(offline / "server_key.hex")).returncode == 0

    port = free_port()
    server = ServerProcess(home, broker.url, port).start()
    term_db = tmp_path / "terminal.sqlite"
    config_path = tmp_path / "terminal.json"
    config_path.write_text(
        json.dumps(
            {
                **creds.to_json(),
                "broker_url": broker.url,
                "server_url": server.base_url,
                "db_path": str(term_db),
                "reader": "stdin",
                "batch_size": 20,
                "ack_timeout_s": 2.0,
                "heartbeat_s": 1.0,
                # the terminal's own retention out of the way: only the server's mark limits pruning
                "journal_keep_days": 1e-9,
            }
        )
    )
    events: list[dict] = []
    term = TerminalProcess(config_path, tmp_path / "terminal.log", events).start()
    stop_taps = threading.Event()
    try:
        assert wait_until(lambda: any(e.get("event") == "link" and e.get("online") for e in events), 30)

        def tap() -> None:  # a lunch queue: a few taps every 50 ms until told to stop
            k = 0
            while not stop_taps.is_set():
                term.send(
                    [f"{world.diners[(k + j) % 30].card_id} shop {100 + (k + j) % 50}" for j in range(3)]
                )
                k += 3
                time.sleep(0.05)

        tapper = threading.Thread(target=tap)
        tapper.start()
        assert wait_until(lambda: sum(s == "applied" for _, s in _journal(term_db).values()) >= 60, 30)

        # what the terminal holds as acknowledged right now was committed before the snapshot
        acked_before = {seq: u for seq, (u, s) in _journal(term_db).items() if s == "applied"}
        first = server_cli("--home", str(home), "backup", str(tmp_path / "backups"), "--json")
        assert first.returncode == 0, first.stderr
        backup_a = json.loads(first.stdout)
        held_a = backup_a["terminals"][creds.terminal_id]["held_through"]
        time.sleep(1.5)  # more sales acknowledged after the backup
        second = server_cli("--home", str(home), "backup", str(tmp_path / "backups"), "--json")
        assert second.returncode == 0, second.stderr
        time.sleep(1.0)
        stop_taps.set()
        tapper.join()
        assert wait_until(lambda: _outbox(term_db) == 0, 60), "the outbox did not drain"

        # the journal was pruned, but only up to what the OLDEST kept backup holds
        assert wait_until(lambda: min(_journal(term_db)) > 1, 30), "nothing was pruned"
        journal_live = _journal(term_db)
        assert min(journal_live) <= held_a + 1
        server.terminate()

        acked_all = {seq: u for seq, (u, s) in journal_live.items() if s == "applied"}
        last_seq = max(journal_live)
        assert len(acked_all) == len(journal_live)  # all acknowledged, none pending

        # --- restore the OLDER backup into a fresh folder, then check -----------------------
        restored_home = tmp_path / "restored"
        r = server_cli(
            "restore",
            backup_a["folder"],
            "--data",
            str(restored_home),
            "--key",
            str(offline / "server_key.hex"),
            "--json",
        )
        # restore runs `check` on the restored database: exit 0 and ok mean it passed
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["ok"]
        restored_db = restored_home / "server" / "canteen.sqlite"

        in_backup = _server_sales(restored_db, creds.terminal_id)
        # every sale acknowledged before the backup is there
        assert all(in_backup.get(seq, ("",))[0] == u for seq, u in acked_before.items())
        # what the restore lost: acknowledged after the snapshot, and nobody will send them —
        # the terminal's outbox is empty
        lost = sorted(set(range(1, last_seq + 1)) - set(in_backup))
        print(
            f"backup A held {len(in_backup)} of {last_seq} sales; the restore lost {len(lost)} "
            f"acknowledged sales (seq {lost[0]}..{lost[-1]}); outbox {_outbox(term_db)}"
        )
        assert lost and _outbox(term_db) == 0
        assert all(seq > held_a for seq in lost)

        # --- the restored server runs; the terminal sends the lost sales again -------------
        server = ServerProcess(restored_home, broker.url, port).start()
        assert wait_until(lambda: len(_server_sales(restored_db, creds.terminal_id)) == last_seq, 60), (
            "the terminal did not send the lost sales again"
        )
        assert wait_until(lambda: _outbox(term_db) == 0, 30)
        after = _server_sales(restored_db, creds.terminal_id)
        # every sale the terminal ever made is there once, applied, with the terminal's uuid
        assert sorted(after) == list(range(1, last_seq + 1))
        assert all(status == "applied" for _, status in after.values())
        assert all(after[seq][0] == u for seq, (u, _) in _journal(term_db).items())
        conn = sqlite3.connect(f"file:{restored_db}?mode=ro", uri=True)
        txns = conn.execute(
            "SELECT count(*), count(DISTINCT ref) FROM txns WHERE kind = 'sale' AND ref LIKE ?",
            (f"{creds.terminal_id}/%",),
        ).fetchone()
        conn.close()
        assert txns == (last_seq, last_seq), "a sale was booked twice or not at all"
        # the terminal took a snapshot across the delta numbering the restore moved on
        tconn = sqlite3.connect(f"file:{term_db}?mode=ro", uri=True)
        version = int(tconn.execute("SELECT value FROM meta WHERE key = 'delta_version'").fetchone()[0])
        tconn.close()
        assert version >= DELTA_JUMP
        server.terminate()
        ok = server_cli("--home", str(restored_home), "check")
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        stop_taps.set()
        term.terminate()
        server.terminate()
