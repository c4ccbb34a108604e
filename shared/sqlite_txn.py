"""One write transaction on a SQLite file, for the server's database and the terminal's alike.

Connections are opened in autocommit mode (``isolation_level=None``); a write that must be
all-or-nothing runs in :func:`write_txn`, which takes the write lock up front (``BEGIN
IMMEDIATE``), so two threads writing the same file queue on ``busy_timeout`` instead of
failing half-way, and rolls back on any exception. It is durable when the connection runs
``synchronous=FULL`` (both databases' default). Nested use joins the outer transaction
through a savepoint: an inner failure undoes only the inner part and is re-raised.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType


class write_txn:  # noqa: N801 - used as the function it was: ``with write_txn(conn):``
    """One write transaction; nested use joins the outer one via a savepoint. A class, not
    a generator context manager: the terminal opens several per sale, and the generator's
    frame and contextlib's wrapper cost more than the statements' own Python calls."""

    __slots__ = ("conn", "_nested")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._nested = False

    def __enter__(self) -> sqlite3.Connection:
        conn = self.conn
        if conn.in_transaction:
            self._nested = True
            conn.execute("SAVEPOINT nested")
        else:
            conn.execute("BEGIN IMMEDIATE")
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self.conn
        if self._nested:
            if exc_type is not None:
                conn.execute("ROLLBACK TO nested")
            conn.execute("RELEASE nested")
        elif exc_type is not None:
            conn.execute("ROLLBACK")
        else:
            conn.execute("COMMIT")
