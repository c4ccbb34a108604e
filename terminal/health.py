"""What a terminal reports of its own machine in its status: the disk under its journal
(free and total bytes) and the journal's size on disk (the database with its WAL)."""

from __future__ import annotations

import os
import shutil


def disk_and_journal(db_path: str) -> tuple[int | None, int | None, int | None]:
    """(free bytes, total bytes, journal bytes); None where it cannot be read. (os.path,
    not pathlib: every status message asks, and the Path objects cost more than the stats.)"""
    parent = os.path.dirname(db_path) or "."
    try:
        usage = shutil.disk_usage(parent if os.path.exists(parent) else ".")
        free, total = int(usage.free), int(usage.total)
    except OSError:
        free = total = None
    size = 0
    for p in (db_path, f"{db_path}-wal", f"{db_path}-shm"):
        try:
            size += os.stat(p).st_size
        except OSError:
            continue
    return free, total, size or None
