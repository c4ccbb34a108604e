"""Online backups and restore, on real SQLite files: the copy is one consistent moment of a
database that keeps taking sales; the server key stays out of it; a restore goes only into
a fresh folder, only with the right key, only from an intact set, and passes ``check``."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli.root import main
from server.downstream import backup_marks
from server.downstream.deltas import current_version, deltas_since
from server.infra import backup
from server.infra.db import open_db
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.errors import DomainError
from shared.protocol import ServerKey
from tests.helpers import populated, sale, signed_batch, terminal

pytestmark = pytest.mark.sqlite_only("backs up a real SQLite file (PostgreSQL: tests/test_backup_pg.py)")


def _home_with_sales(tmp_path: Path, clock: FakeClock, sales: int = 40) -> tuple[Path, object, object]:
    """A data folder made by `init`, a populated database, one terminal with ``sales`` sales."""
    home = tmp_path / "live"
    assert CliRunner().invoke(main, ["--home", str(home), "init"]).exit_code == 0
    conn = open_db(home / "server" / "canteen.sqlite")
    world = populated(conn, clock.now_ms())
    creds = terminal(conn, "C01", clock.now_ms())
    worker = IngestWorker(conn, clock, lambda *_: True)
    card = world.diners[0].card_id
    worker.process(
        [
            (
                f"canteen/v1/t/{creds.terminal_id}/up/sales",
                signed_batch(
                    creds,
                    [sale(creds, s, card, 100, clock.now_ms()) for s in range(1, sales + 1)],
                    clock.now_ms(),
                ),
            )
        ]
    )
    conn.close()
    return home, world, creds


def _key(home: Path) -> ServerKey:
    return ServerKey.from_hex((home / "server" / "server_key.hex").read_text().strip())


def test_backup_is_one_consistent_moment_while_sales_keep_being_committed(
    tmp_path: Path, clock: FakeClock
) -> None:
    home, world, creds = _home_with_sales(tmp_path, clock)
    db = home / "server" / "canteen.sqlite"
    conn = open_db(db)
    worker = IngestWorker(conn, clock, lambda *_: True)
    card = world.diners[1].card_id
    stop = threading.Event()
    committed = [40]

    def ingest() -> None:  # another connection, committing small batches all the time
        seq = 40
        while not stop.is_set():
            batch = [sale(creds, seq + k, card, 1, clock.now_ms()) for k in range(1, 6)]
            worker.process(
                [(f"canteen/v1/t/{creds.terminal_id}/up/sales", signed_batch(creds, batch, clock.now_ms()))]
            )
            seq += 5
            committed[0] = seq

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        # tiny steps with pauses: the copy spans many of the writer's commits
        folder, manifest = backup.take_backup(
            db, tmp_path / "backups", _key(home), settings=backup.CopySettings(pages=4, pause_s=0.005)
        )
        during = committed[0]
    finally:
        stop.set()
        writer.join()
    assert manifest["copy_steps"] > 10
    copy = sqlite3.connect(folder / "canteen.sqlite")
    held = copy.execute("SELECT count(*), max(seq) FROM sales").fetchone()
    # every sale the copy holds came with its ledger entries (one moment, not a torn copy) …
    sale_txns = copy.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0]
    assert held[0] == held[1] == sale_txns == manifest["sales"]
    assert manifest["terminals"][creds.terminal_id] == {"held_through": held[1], "max_seq": held[1]}
    # … and the writer was not held up: it went on committing while the copy ran
    assert committed[0] > held[1] and during > 40
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    copy.close()
    assert conn.execute("SELECT count(*) FROM sales").fetchone()[0] == committed[0]
    conn.close()


def test_the_server_key_is_not_in_a_backup(tmp_path: Path, clock: FakeClock) -> None:
    home, _, _ = _home_with_sales(tmp_path, clock)
    key = _key(home)
    folder, manifest = backup.take_backup(
        home / "server" / "canteen.sqlite", tmp_path / "b", key, config_file=home / "server" / "config.py"
    )
    secret = key.to_hex()
    for path in folder.rglob("*"):
        assert secret.encode() not in path.read_bytes(), path
    assert manifest["server_public_key"] == key.public_hex
    assert (folder / "canteen.sqlite").stat().st_mode & 0o077 == 0
    # the database, the manifest and the settings file `init` wrote: no key file
    assert sorted(p.name for p in folder.iterdir()) == ["canteen.sqlite", "config.py", "manifest.json"]


def test_held_through_stops_at_the_first_missing_sale(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE sales(terminal_id TEXT, seq INTEGER)")
    conn.executemany("INSERT INTO sales VALUES (?, ?)", [("A", s) for s in (1, 2, 3, 5, 6)] + [("B", 2)])
    assert backup.sale_marks(conn) == {
        "A": {"held_through": 3, "max_seq": 6},
        "B": {"held_through": 0, "max_seq": 2},
    }


def test_restore_refuses_a_folder_in_use_a_wrong_key_and_a_damaged_set(
    tmp_path: Path, clock: FakeClock
) -> None:
    home, _, _ = _home_with_sales(tmp_path, clock)
    folder, _ = backup.take_backup(home / "server" / "canteen.sqlite", tmp_path / "b", _key(home))
    with pytest.raises(DomainError) as exc:
        backup.restore_files(folder, home, _key(home))  # the live folder itself
    assert exc.value.code == "restore_target_not_empty"
    with pytest.raises(DomainError) as exc:
        backup.restore_files(folder, tmp_path / "new1", ServerKey.generate())
    assert exc.value.code == "backup_key_mismatch"
    assert not (tmp_path / "new1").exists()  # nothing written

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sales"] += 1  # a manifest edited by hand no longer carries the key's signature
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DomainError) as exc:
        backup.restore_files(folder, tmp_path / "new2", _key(home))
    assert exc.value.code == "backup_invalid"

    folder2, _ = backup.take_backup(home / "server" / "canteen.sqlite", tmp_path / "b", _key(home))
    with open(folder2 / "canteen.sqlite", "r+b") as f:  # one flipped byte in the database
        f.seek(5000)
        b = f.read(1)
        f.seek(5000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(DomainError) as exc:
        backup.restore_files(folder2, tmp_path / "new3", _key(home))
    assert exc.value.code == "backup_invalid"


def test_backup_and_restore_commands_then_check_passes(tmp_path: Path, clock: FakeClock) -> None:
    home, _, creds = _home_with_sales(tmp_path, clock)
    runner = CliRunner()
    key_file = tmp_path / "offline" / "server_key.hex"
    key_file.parent.mkdir()
    r = runner.invoke(main, ["--home", str(home), "backup-key", str(key_file)])
    assert r.exit_code == 0, r.output
    assert key_file.stat().st_mode & 0o077 == 0
    assert (
        runner.invoke(main, ["--home", str(home), "backup-key", str(key_file)]).exit_code == 2
    )  # never overwrites

    r = runner.invoke(main, ["--home", str(home), "backup", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{") :])
    assert out["terminals"][creds.terminal_id]["held_through"] == 40
    live = open_db(home / "server" / "canteen.sqlite")
    before_version = current_version(live)
    live.close()

    r = runner.invoke(
        main,
        ["restore", out["folder"], "--data", str(tmp_path / "restored"), "--key", str(key_file), "--json"],
    )
    assert r.exit_code == 0, r.output
    restored = json.loads(r.stdout[r.stdout.index("{") :])
    assert restored["ok"] and restored["violations"] == [] and restored["ledger_sum_fen"] == 0
    r = runner.invoke(main, ["--home", str(tmp_path / "restored"), "check"])
    assert r.exit_code == 0, r.output

    conn = open_db(tmp_path / "restored" / "server" / "canteen.sqlite")
    assert (
        conn.execute("SELECT count(*) FROM sales WHERE terminal_id = ?", (creds.terminal_id,)).fetchone()[0]
        == 40
    )
    # terminals see a gap in the deltas (and take a snapshot) instead of new deltas that
    # reuse numbers they already applied from the server before the restore
    jump = deltas_since(conn, before_version)
    assert jump[0].version == before_version + backup_marks.DELTA_JUMP and jump[0].changes == ()
    mark = {m.terminal_id: m for m in backup_marks.marks(conn)}[creds.terminal_id]
    assert mark.restore_epoch == restored["restore_epoch"] and mark.restored_seq == 40
    assert mark.backed_up_seq == 40  # the backup it came from counts as kept
    conn.close()

    # into a folder that is not empty: refused, exit 2, nothing touched
    r = runner.invoke(main, ["restore", out["folder"], "--data", str(home), "--key", str(key_file)])
    assert r.exit_code == 2 and "restore_target_not_empty" in r.output


def test_keep_deletes_older_sets_and_marks_follow_the_oldest_kept(tmp_path: Path, clock: FakeClock) -> None:
    home, world, creds = _home_with_sales(tmp_path, clock, sales=10)
    db = home / "server" / "canteen.sqlite"
    runner = CliRunner()
    dest = tmp_path / "b"
    conn = open_db(db)
    worker = IngestWorker(conn, clock, lambda *_: True)
    seq = 10
    for _ in range(3):
        assert runner.invoke(main, ["--home", str(home), "backup", str(dest), "--keep", "2"]).exit_code == 0
        batch = [sale(creds, seq + k, world.diners[0].card_id, 100, clock.now_ms()) for k in range(1, 6)]
        worker.process(
            [(f"canteen/v1/t/{creds.terminal_id}/up/sales", signed_batch(creds, batch, clock.now_ms()))]
        )
        seq += 5
    sets = backup.backup_sets(dest)
    assert len(sets) == 2
    # the backups held 10, 15, 20 sales; the first was deleted: the oldest kept holds 15
    mark = {m.terminal_id: m for m in backup_marks.marks(conn)}[creds.terminal_id]
    assert mark.backed_up_seq == 15
    # a kept set deleted by hand no longer counts either
    shutil.rmtree(sets[0])
    mark = {m.terminal_id: m for m in backup_marks.marks(conn)}[creds.terminal_id]
    assert mark.backed_up_seq == 20
    conn.close()
