"""What the server tells each terminal about backups, and the record of backups and restores.

Owns the tables ``backups`` (every backup taken, with the sales of each terminal it holds)
and ``restores`` (every time this database was put back from a backup).

**Journal pruning.** A terminal keeps every sale in its journal until the server says the
sale is in a backup: each terminal gets a signed, retained
:class:`~shared.protocol.backup_mark.BackupMark` whose ``backed_up_seq`` is what the
**oldest backup still kept** holds of it with nothing missing before it. "Kept" means not
removed by retention (``backup --keep``) and its folder still on this machine: whichever of
the kept backups is restored, the terminals still hold every sale after it.

**After a restore.** The restored database lacks whatever happened after its backup — among
it sales the server had already acknowledged, which the terminals therefore no longer send.
:func:`record_restore` names the restore with a random ``epoch`` and keeps what the backup
held per terminal; the marks carry both, and a terminal seeing a new epoch sends again every
journaled sale above what the server held (the at-most-once key makes the copies it does
hold harmless ``duplicate`` answers).

The restore also moves the delta log's numbering on by :data:`DELTA_JUMP`: terminals may
have applied deltas numbered past the backup's last one, made by the server before the
restore, and must not take the restored server's new deltas with the same numbers for them.
An empty delta at the new number shows every terminal a gap, and a gap sends it to fetch a
whole snapshot (``terminal.sync``). A billion deltas after one backup would be needed to
reach past the jump (one delta per ingest commit: years at full load).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any

from server.downstream.deltas import current_version
from server.downstream.polling import PollingPublisher, Publish
from server.infra.backup import MANIFEST, sale_marks
from shared.clock import Clock
from shared.protocol import ServerKey, topics
from shared.protocol.backup_mark import BackupMark

log = logging.getLogger(__name__)

DELTA_JUMP = 1_000_000_000


def _held(manifest: dict[str, Any]) -> dict[str, int]:
    return {tid: int(m["held_through"]) for tid, m in manifest.get("terminals", {}).items()}


def record_backup(conn: sqlite3.Connection, manifest: dict[str, Any], location: str | Path) -> None:
    """Record a backup that was written and checked (inside a write transaction)."""
    conn.execute(
        "INSERT INTO backups(backup_id, taken_at_ms, location, sha256, bytes, marks_json) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(backup_id) DO NOTHING",
        (
            manifest["backup_id"],
            manifest["taken_at_ms"],
            str(Path(location).resolve()),
            manifest["sha256"],
            manifest["bytes"],
            json.dumps(_held(manifest), sort_keys=True, separators=(",", ":")),
        ),
    )


def record_removed(conn: sqlite3.Connection, backup_ids: list[str], now_ms: int) -> None:
    """Backups deleted by retention no longer count for journal pruning."""
    conn.executemany(
        "UPDATE backups SET removed_at_ms = ? WHERE backup_id = ? AND removed_at_ms IS NULL",
        [(now_ms, b) for b in backup_ids],
    )


def backups(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every backup recorded, oldest first, with whether it still counts as kept."""
    out = []
    for r in conn.execute(
        "SELECT backup_id, taken_at_ms, location, sha256, bytes, marks_json, removed_at_ms "
        "FROM backups ORDER BY taken_at_ms, backup_id"
    ):
        out.append(
            {
                "backup_id": r[0],
                "taken_at_ms": r[1],
                "location": r[2],
                "sha256": r[3],
                "bytes": r[4],
                "terminals": len(json.loads(r[5])),
                "removed_at_ms": r[6],
                "kept": r[6] is None and _present(r[2]),
            }
        )
    return out


def _present(location: str) -> bool:
    return (Path(location) / MANIFEST).is_file()


def oldest_kept(conn: sqlite3.Connection) -> tuple[str, int, dict[str, int]] | None:
    """(backup id, time, held per terminal) of the oldest backup still kept, or None."""
    for backup_id, taken_at_ms, location, marks in conn.execute(
        "SELECT backup_id, taken_at_ms, location, marks_json FROM backups "
        "WHERE removed_at_ms IS NULL ORDER BY taken_at_ms, backup_id"
    ):
        if _present(location):
            return backup_id, int(taken_at_ms), json.loads(marks)
    return None


def record_restore(
    conn: sqlite3.Connection, manifest: dict[str, Any], location: str | Path, now_ms: int
) -> str:
    """In the freshly restored database (inside a write transaction): name the restore,
    keep what the backup held per terminal, record the backup itself (it holds no row of
    its own: it was taken before that row was written) and move the delta numbering on.
    Returns the restore's epoch."""
    epoch = _restore(conn, _held(manifest), manifest["backup_id"], int(manifest["taken_at_ms"]), now_ms)
    record_backup(conn, manifest, location)
    return epoch


def declare_restore(conn: sqlite3.Connection, source: str, now_ms: int) -> tuple[str, dict[str, int]]:
    """This database was put back by other means than our backups — a promoted asynchronous
    standby, a point-in-time recovery — and may lack commits the terminals saw acknowledged
    (inside a write transaction). What it holds per terminal is read from its own sales
    (``held_through``: every seq up to it present; a sale above a gap is sent again, a copy
    it holds is a harmless ``duplicate``). Returns the epoch and the held seqs."""
    held = {tid: m["held_through"] for tid, m in sale_marks(conn).items()}
    return _restore(conn, held, f"declared: {source}", now_ms, now_ms), held


def _restore(
    conn: sqlite3.Connection, held: dict[str, int], source: str, taken_at_ms: int, now_ms: int
) -> str:
    """Record a restore: its epoch, what the database holds of every terminal it knows (0
    for one with no sale in it — its sales acknowledged since must come back too) and an
    empty delta :data:`DELTA_JUMP` ahead."""
    epoch = secrets.token_hex(8)
    known = {r[0]: 0 for r in conn.execute("SELECT id FROM terminals WHERE state <> 'revoked'")}
    before = current_version(conn)
    after = before + DELTA_JUMP
    # an empty delta at the new number: every terminal sees a gap and takes a snapshot
    conn.execute("INSERT INTO deltas(version, at_ms, changes_json) VALUES (?, ?, '[]')", (after, now_ms))
    conn.execute(
        "INSERT INTO restores(epoch, restored_at_ms, backup_id, taken_at_ms, marks_json, "
        "delta_from, delta_to) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            epoch,
            now_ms,
            source,
            taken_at_ms,
            json.dumps(known | held, sort_keys=True, separators=(",", ":")),
            before,
            after,
        ),
    )
    return epoch


def latest_restore(conn: sqlite3.Connection) -> tuple[str, dict[str, int]] | None:
    row = conn.execute(
        "SELECT epoch, marks_json FROM restores ORDER BY restored_at_ms DESC, rowid DESC LIMIT 1"
    ).fetchone()
    return (row[0], json.loads(row[1])) if row else None


def marks(conn: sqlite3.Connection) -> list[BackupMark]:
    """The mark for every terminal not revoked."""
    kept = oldest_kept(conn)
    restore = latest_restore(conn)
    out = []
    for (tid,) in conn.execute("SELECT id FROM terminals WHERE state <> 'revoked' ORDER BY id"):
        backed_up = kept[2].get(tid, 0) if kept else 0
        epoch, restored = "", 0
        if restore is not None and tid in restore[1]:
            epoch, restored = restore[0], restore[1][tid]
        out.append(BackupMark(tid, backed_up, kept[1] if kept and backed_up else 0, epoch, restored))
    return out


class BackupMarkPublisher(PollingPublisher):
    """Publishes each terminal's mark (retained) whenever it changes — a backup recorded or
    removed by another process (the backup command, the timer) is seen within ``poll_s`` —
    and all of them again on every connect to the broker."""

    _log = log
    _what = "backup marks"

    def __init__(
        self, conn: sqlite3.Connection, key: ServerKey, publish: Publish, clock: Clock, poll_s: float = 10.0
    ) -> None:
        self._sent: dict[str, BackupMark] = {}
        self._lock = threading.Lock()
        super().__init__(conn, key, publish, clock, thread_name="backup-marks", poll_s=poll_s)

    def _stopped(self) -> None:
        self._conn.close()

    def on_state(self, up: bool) -> None:
        """The broker link came up (network thread): send every mark again, from our thread."""
        if up:
            with self._lock:
                self._sent.clear()
            self._wake.set()

    def _round(self) -> None:
        self.publish_changed()

    def publish_changed(self) -> int:
        """Publish the marks that differ from the last ones sent; returns how many went out."""
        sent = 0
        for mark in marks(self._conn):
            with self._lock:
                if self._sent.get(mark.terminal_id) == mark:
                    continue
            if not self._send_retained(topics.backup(mark.terminal_id), "backup_mark", mark.to_body()):
                return sent  # not connected: all go out again on the next connect
            with self._lock:
                self._sent[mark.terminal_id] = mark
            sent += 1
        return sent
