"""One write transaction on a SQLite file, for the server's database and the terminal's alike.

Connections are opened in autocommit mode (``isolation_level=None``); a write that must be
all-or-nothing runs in :func:`write_txn`, which takes the write lock up front (``BEGIN
IMMEDIATE``), so two threads writing the same file queue on ``busy_timeout`` instead of
failing half-way, and rolls back on any exception. It is durable when the connection runs
``synchronous=FULL`` (both databases' default). Nested use joins the outer transaction
through a savepoint: an inner failure undoes only the inner part and is re-raised.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; nested use joins the outer one via a savepoint."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT nested")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO nested")
            conn.execute("RELEASE nested")
            raise
        conn.execute("RELEASE nested")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
