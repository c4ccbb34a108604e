"""Work that one process at a time may do: a named *role* (运行一次的作业).

Publishing the delta log in order, quarterly settlement and year-end clearing must not run
in two server processes at once. A :class:`Role` is held by at most one process:

* on PostgreSQL, a session advisory lock (``pg_try_advisory_lock``) on a connection of the
  role's own, outside the pool: the database drops it the moment the holder's session ends,
  so when the holding process dies another one takes the role on its next try (the
  publisher tries every half second);
* on SQLite, an exclusive ``flock`` on a file beside the database (``<db>.<name>.lock``),
  which the kernel drops when the holder dies — the same hand-over, for the one machine a
  SQLite file lives on.

:func:`run_once` is the one-shot form (a job: settle, close the year); a long-lived worker
calls :meth:`Role.hold` before each round of work and does nothing while another holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from server.infra import pg
from shared.errors import DomainError

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """The 64-bit advisory-lock key of a role name (signed, as PostgreSQL's bigint)."""
    digest = hashlib.sha256(b"canteen-role\x00" + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Role:
    """One named role on one database (a path or a PostgreSQL URL)."""

    def __init__(self, database: str | Path, name: str) -> None:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a role name is letters, digits, - and _: {name!r}")
        self.database = os.fspath(database)
        self.name = name
        self.held = False
        self._conn: pg.PgConnection | None = None
        self._fd: int | None = None

    def hold(self) -> bool:
        """Whether this process holds the role now: takes it when it is free, and checks a
        held one is still held (a PostgreSQL session that was cut lost its lock)."""
        try:
            if pg.is_url(self.database):
                return self._hold_pg()
            return self._hold_file()
        except (sqlite3.Error, OSError) as exc:
            log.warning("role %s: cannot reach the lock (%s); not holding it", self.name, exc)
            self._drop()
            return False

    def _hold_pg(self) -> bool:
        if self._conn is None:
            self._conn = pg.connect(self.database, pooled=False)
        if self.held:
            self._conn.execute("SELECT 1").fetchone()  # raises when the session is gone
            return True
        got = self._conn.execute("SELECT pg_try_advisory_lock(?)", (lock_key(self.name),)).fetchone()[0]
        self._took(bool(got))
        return self.held

    def _hold_file(self) -> bool:
        if self.held:
            return True
        if self._fd is None:
            self._fd = os.open(f"{self.database}.{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._took(False)
            return False
        self._took(True)
        return True

    def _took(self, got: bool) -> None:
        if got and not self.held:
            log.info("role %s: taken by process %d", self.name, os.getpid())
        self.held = got

    def release(self) -> None:
        """Give the role up (a no-op when not held)."""
        if self.held:
            log.info("role %s: released by process %d", self.name, os.getpid())
        self._drop()

    def _drop(self) -> None:
        self.held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):  # a cut session: its lock is gone already
                conn.close()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the file drops its flock


@contextlib.contextmanager
def run_once(database: str | Path, name: str) -> Iterator[None]:
    """Run the body only if no other process is running job ``name`` on this database;
    otherwise refuse with ``job_running`` (nothing done)."""
    role = Role(database, name)
    try:
        if not role.hold():
            raise DomainError("job_running", f"{name} is running in another process", job=name)
        yield
    finally:
        role.release()
