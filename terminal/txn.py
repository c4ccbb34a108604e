"""The terminal's one write transaction on its SQLite file.

Connections are opened in autocommit mode (``isolation_level=None``); a write that must be
all-or-nothing runs in :func:`write_txn`, which takes the write lock up front (``BEGIN
IMMEDIATE``), so two threads writing the same file queue on ``busy_timeout`` instead of
failing half-way, and rolls back on any exception. It is durable when the connection runs
``synchronous=FULL`` (the store's default; see :meth:`terminal.store.Store.relaxed_txn`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
