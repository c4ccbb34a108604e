"""What a terminal reports of its own machine in its status: the disk under its journal
(free and total bytes) and the journal's size on disk (the database with its WAL)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def disk_and_journal(db_path: str) -> tuple[int | None, int | None, int | None]:
    """(free bytes, total bytes, journal bytes); None where it cannot be read."""
    path = Path(db_path)
    try:
        usage = shutil.disk_usage(path.parent if path.parent.exists() else ".")
        free, total = int(usage.free), int(usage.total)
    except OSError:
        free = total = None
    size = 0
    for p in (path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        try:
            size += os.stat(p).st_size
        except OSError:
            continue
    return free, total, size or None
