"""Files only their owner may read: databases, keys, terminal configurations (mode 0600).

Files are created with ``os.open(..., 0o600)`` rather than by changing the umask (the umask
is process-wide and the server has threads). A file that already exists with looser
permissions is tightened, so an installation from before this rule is fixed on its next
start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_MODE = 0o600


def ensure_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 if it is missing; make an existing one 0600."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        if stat.S_IMODE(p.stat().st_mode) & 0o077:
            p.chmod(PRIVATE_MODE)
        return
    os.close(fd)


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, readable by its owner only, replacing any content."""
    ensure_private(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def ensure_private_sqlite(db_path: str | Path) -> None:
    """Before opening a SQLite file: the database 0600 (created empty if missing, which SQLite
    accepts as a new database), and any existing ``-wal``/``-shm`` tightened too. SQLite
    creates those companions with the database file's mode, so new ones are 0600 already.
    ``:memory:`` and ``file:`` URIs are left alone."""
    name = str(db_path)
    if name == ":memory:" or name.startswith("file:") or not name:
        return
    ensure_private(name)
    for companion in (Path(name + "-wal"), Path(name + "-shm")):
        if companion.exists() and stat.S_IMODE(companion.stat().st_mode) & 0o077:
            companion.chmod(PRIVATE_MODE)
