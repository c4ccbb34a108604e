"""Online backups of the server database, their manifests and retention, and putting one
back into a fresh data folder.

**Consistent while sales come in.** The database runs in WAL mode, where a reader never
blocks the writer. A backup opens one read transaction on the live file and copies that
snapshot with SQLite's online backup API (``sqlite3.Connection.backup``), ``pages`` at a
time with a short pause between steps, so the copy's disk reads leave room for ingest. The
read transaction is what makes the paged copy finish: without it SQLite restarts a paged
backup whenever another connection writes, and under steady ingest it never completes
(tried: still restarting after 20 s on a file that copies in 0.9 s with the read
transaction held). While the copy runs, the WAL cannot be checkpointed past its snapshot
and grows; the next checkpoint after the backup catches up.

**A backup set** is a folder ``DEST/<backup_id>/`` holding

* ``canteen.sqlite`` — the database as of the snapshot, in rollback-journal mode (one
  self-contained file), mode 0600: it holds terminal secrets and people's details;
* ``manifest.json`` — when (the snapshot's time), the schema and delta versions, per
  terminal the highest sale held with none missing before it (``held_through``) and the
  highest held at all (``max_seq``), the file's size and SHA-256, and an Ed25519 signature
  over all of it by the server's key;
* ``config.py`` — the server's settings file, when there is one.

It is written as ``DEST/<backup_id>.partial/`` and renamed when complete and checked, so a
folder without ``.partial`` is a whole backup. Backup ids sort by time.

**The server key is not in a backup.** The database and the key that signs what terminals
trust are kept apart: a stolen backup cannot sign deltas, and the key is backed up once,
separately (``canteen-server backup-key``), to offline media. A restore needs that key file:
it checks the manifest's signature with it, which proves both that the key is the right
one (terminals hold its public half) and that neither the manifest nor, through its
SHA-256, the database was altered.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.clock import china_datetime
from shared.errors import DomainError
from shared.private_files import ensure_private, write_private
from shared.protocol import ServerKey, ServerVerifier, canonical_json

FORMAT = "canteen-backup/1"
DB_NAME = "canteen.sqlite"
MANIFEST = "manifest.json"
CONFIG_NAME = "config.py"
PARTIAL = ".partial"
KEY_NOTE = "not included: back up server_key.hex apart from the database (canteen-server backup-key)"
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}\.\d{3}-[0-9a-f]{6}$")
# settings that name the data files: a config.py that sets them would point a restored
# server back at the old database
_PATH_SETTING = re.compile(r"^\s*(DATABASE|SERVER_KEY_FILE)\s*=", re.MULTILINE)


@dataclass(frozen=True)
class CopySettings:
    """How gently the copy reads the live file: ``pages`` per step (4 KiB each), then a
    pause of ``pause_s`` so the writer gets the disk."""

    pages: int = 1024
    pause_s: float = 0.002


@dataclass(frozen=True)
class CopyStats:
    pages: int
    steps: int
    seconds: float


def snapshot_copy(
    src_path: str | Path, dst_path: str | Path, settings: CopySettings
) -> tuple[int, CopyStats]:
    """Copy the database at ``src_path`` as of one moment to ``dst_path`` (created 0600,
    rollback-journal mode) while other connections go on writing; returns the snapshot's
    time (ms since the epoch, taken when the read transaction began) and the copy's size."""
    ensure_private(dst_path)
    src = sqlite3.connect(str(src_path), isolation_level=None, timeout=30)
    dst = sqlite3.connect(str(dst_path), isolation_level=None)
    steps = [0, 0]

    def pause(_status: int, remaining: int, total: int) -> None:
        steps[0] += 1
        steps[1] = total
        if remaining and settings.pause_s > 0:
            time.sleep(settings.pause_s)

    try:
        dst.execute("PRAGMA synchronous=OFF")  # fsynced once, at the end
        src.execute("BEGIN")  # a read transaction: the snapshot every step copies from
        src.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        taken_at_ms = time.time_ns() // 1_000_000
        t0 = time.perf_counter()
        src.backup(dst, pages=settings.pages, progress=pause)
        seconds = time.perf_counter() - t0
        src.execute("COMMIT")
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        src.close()
        dst.close()
    _fsync(dst_path)
    return taken_at_ms, CopyStats(steps[1], steps[0], seconds)


def sale_marks(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per terminal: ``held_through``, the highest seq with every seq from 1 up to it
    present (applied, rejected or quarantined — each has its row in ``sales``), and
    ``max_seq``, the highest present. Sales above ``held_through`` are not all there."""
    rows = conn.execute(
        """
        SELECT terminal_id, max(seq), max(CASE WHEN seq = rn THEN seq ELSE 0 END)
        FROM (SELECT terminal_id, seq,
                     row_number() OVER (PARTITION BY terminal_id ORDER BY seq) AS rn
              FROM sales) AS numbered
        GROUP BY terminal_id
        """
    ).fetchall()
    return {r[0]: {"held_through": int(r[2]), "max_seq": int(r[1])} for r in rows}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def new_backup_id(now_ms: int) -> str:
    """``20261106T031500.123-9f2c1a``: the time (Asia/Shanghai, to the millisecond), so ids
    sort by time, and a random tail."""
    return f"{china_datetime(now_ms).strftime('%Y%m%dT%H%M%S')}.{now_ms % 1000:03d}-{secrets.token_hex(3)}"


def take_backup(
    db_path: str | Path,
    dest: str | Path,
    key: ServerKey,
    *,
    config_file: str | Path | None = None,
    settings: CopySettings | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Back the database at ``db_path`` up into a new set under ``dest`` (created if
    missing); returns the set's folder and its manifest. Nothing is left under ``dest`` but
    a ``.partial`` folder if it fails half-way."""
    settings = settings or CopySettings()
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)  # a folder that exists keeps its mode
    except OSError as exc:
        raise DomainError(
            "backup_failed",
            f"cannot use the backup folder {dest}: {exc.strerror}",
            zh=f"无法使用备份目录 {dest}",
        ) from exc
    backup_id = new_backup_id(time.time_ns() // 1_000_000)
    work = dest / (backup_id + PARTIAL)
    work.mkdir(mode=0o700)
    db_copy = work / DB_NAME
    try:
        taken_at_ms, stats = snapshot_copy(db_path, db_copy, settings)
        t0 = time.perf_counter()
        conn = sqlite3.connect(f"file:{db_copy}?mode=ro", uri=True)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise DomainError("backup_failed", f"the copy fails SQLite's quick_check: {ok}")
            marks = sale_marks(conn)
            schema_version = conn.execute("PRAGMA user_version").fetchone()[0]
            delta_version = conn.execute("SELECT coalesce(max(version), 0) FROM deltas").fetchone()[0]
            sales = conn.execute("SELECT count(*) FROM sales").fetchone()[0]
        finally:
            conn.close()
        t1 = time.perf_counter()
        digest = sha256_file(db_copy)
        t2 = time.perf_counter()
        if config_file is not None and Path(config_file).is_file():
            shutil.copyfile(config_file, work / CONFIG_NAME)
            os.chmod(work / CONFIG_NAME, 0o600)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "backup_id": backup_id,
            "taken_at_ms": taken_at_ms,
            "taken_at": china_datetime(taken_at_ms).strftime("%Y-%m-%d %H:%M:%S +08:00"),
            "database": DB_NAME,
            "bytes": db_copy.stat().st_size,
            "sha256": digest,
            "schema_version": schema_version,
            "delta_version": delta_version,
            "sales": sales,
            "terminals": marks,
            "config": CONFIG_NAME if (work / CONFIG_NAME).exists() else None,
            "server_public_key": key.public_hex,
            "server_key": KEY_NOTE,
            "copy_ms": round(stats.seconds * 1000),
            "check_ms": round((t1 - t0) * 1000),  # quick_check, the per-terminal marks, counts
            "hash_ms": round((t2 - t1) * 1000),
            "copy_pages": stats.pages,
            "copy_steps": stats.steps,
        }
        manifest["signature"] = key.sign(canonical_json(manifest))
        write_private(work / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
        _fsync(work / MANIFEST)
        final = dest / backup_id
        os.replace(work, final)
        _fsync_dir(dest)
    except OSError as exc:
        raise DomainError(
            "backup_failed", f"{exc.strerror or exc} ({exc.filename or dest})", zh="备份写入失败"
        ) from exc
    return final, manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DomainError("backup_invalid", f"{path}: missing", zh=f"{path} 不存在") from exc
    except (OSError, ValueError) as exc:
        raise DomainError("backup_invalid", f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DomainError("backup_invalid", f"{path}: not a {FORMAT} manifest")
    return manifest


def verify_backup(folder: str | Path, key: ServerKey | None = None) -> dict[str, Any]:
    """The manifest of the backup set in ``folder`` once its database matches it (size and
    SHA-256) and, given the server ``key``, the manifest carries that key's signature:
    ``backup_invalid`` or ``backup_key_mismatch`` otherwise."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if key is not None:
        unsigned = {k: v for k, v in manifest.items() if k != "signature"}
        if manifest.get("server_public_key") != key.public_hex:
            raise DomainError(
                "backup_key_mismatch",
                f"the backup was made by server key {str(manifest.get('server_public_key'))[:16]}…, "
                f"the key given is {key.public_hex[:16]}…",
            )
        signature = manifest.get("signature")
        if not isinstance(signature, str) or not ServerVerifier(key.public_hex).verify(
            canonical_json(unsigned), signature
        ):
            raise DomainError("backup_invalid", f"{folder / MANIFEST}: signature does not verify")
    db = folder / str(manifest.get("database", DB_NAME))
    if not db.is_file():
        raise DomainError("backup_invalid", f"{db}: missing", zh=f"{db} 不存在")
    if db.stat().st_size != manifest.get("bytes") or sha256_file(db) != manifest.get("sha256"):
        raise DomainError("backup_invalid", f"{db}: size or SHA-256 differs from the manifest")
    return manifest


def backup_sets(dest: str | Path) -> list[Path]:
    """The complete backup sets under ``dest``, oldest first."""
    dest = Path(dest)
    if not dest.is_dir():
        return []
    return sorted(
        p for p in dest.iterdir() if p.is_dir() and _BACKUP_ID.match(p.name) and (p / MANIFEST).is_file()
    )


def prune(dest: str | Path, keep: int) -> list[str]:
    """Keep the newest ``keep`` backup sets under ``dest``; delete older ones, and any
    ``.partial`` folder older than the newest set (a backup that died half-way). Returns the
    ids of the sets deleted."""
    if keep < 1:
        raise DomainError("invalid_input", f"--keep must be at least 1, not {keep}")
    sets = backup_sets(dest)
    removed = []
    for old in sets[: max(len(sets) - keep, 0)]:
        shutil.rmtree(old)
        removed.append(old.name)
    if sets:
        newest = sets[-1].name
        for p in Path(dest).iterdir():
            if p.name.endswith(PARTIAL) and p.is_dir() and p.name[: -len(PARTIAL)] < newest:
                shutil.rmtree(p)
    return removed


def write_key_backup(key_file: str | Path, out: str | Path) -> ServerKey:
    """Copy the server key to ``out`` (0600, never over an existing file); returns the key."""
    key = ServerKey.from_hex(Path(key_file).read_text().strip())
    out = Path(out)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise DomainError("invalid_input", f"{out} exists; the key backup never overwrites a file") from exc
    with os.fdopen(fd, "w") as f:
        f.write(key.to_hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key


def read_key(path: str | Path) -> ServerKey:
    try:
        return ServerKey.from_hex(Path(path).read_text().strip())
    except FileNotFoundError as exc:
        raise DomainError("invalid_input", f"{path}: no such key file") from exc
    except (OSError, ValueError) as exc:
        raise DomainError("invalid_input", f"{path}: not a server key file ({exc})") from exc


@dataclass(frozen=True)
class RestoredFiles:
    database: Path
    key_file: Path
    config: Path | None  # config.py put in place
    config_set_aside: Path | None  # a config.py that named data files, kept for review only


def restore_files(
    src: str | Path, home: str | Path, key: ServerKey, on_step: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], RestoredFiles]:
    """Put the backup set ``src`` into the data folder ``home``, which must be empty or
    missing: the database, the server key (``key``, the key backup) and the settings file.
    The set is verified first (``verify_backup``); nothing is written if it fails."""
    say = on_step or (lambda text: None)
    home = Path(home)
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise DomainError(
            "restore_target_not_empty",
            f"{home} is not an empty folder; restore only into a fresh one",
            zh=f"{home} 不是空目录",
        )
    manifest = verify_backup(src, key)
    say(
        f"备份已校验 backup verified: {manifest['backup_id']} "
        f"({manifest['taken_at']}, sha256 ok, signature ok)"
    )
    instance = home / "server"
    # 0750: the broker's user (group canteen, deploy/) reads the passwd and ACL files in it;
    # the database and the key are 0600 themselves
    instance.mkdir(parents=True, mode=0o750)
    database = instance / DB_NAME
    ensure_private(database)
    shutil.copyfile(Path(src) / manifest["database"], database)
    _fsync(database)
    key_file = instance / "server_key.hex"
    write_private(key_file, key.to_hex() + "\n")
    config = aside = None
    if manifest.get("config"):
        text = (Path(src) / manifest["config"]).read_text(encoding="utf-8")
        if _PATH_SETTING.search(text):
            aside = instance / "config.py.from-backup"
            write_private(aside, text)
        else:
            config = instance / CONFIG_NAME
            write_private(config, text)
    return manifest, RestoredFiles(database, key_file, config, aside)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
