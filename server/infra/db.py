"""The server's database: opening, migrating, transactions.

SQLite by default: one file, WAL mode, ``synchronous=FULL`` (a committed ledger entry
survives a power cut), foreign keys on. Or PostgreSQL when the target is a
``postgresql://`` URL (:mod:`server.infra.pg`: the same SQL through a small dialect adapter,
the same migrations). Connections use explicit transactions: :func:`write_txn` takes the
write lock up front (``BEGIN IMMEDIATE``; on PostgreSQL an advisory lock) so two writers
queue instead of deadlocking; the ingest worker's :func:`ingest_txn` shares it on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from server.infra import pg
from server.infra.schema import MIGRATIONS
from shared.private_files import ensure_private_sqlite
from shared.sqlite_txn import write_txn as write_txn  # re-exported for the server's modules


def is_postgres(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL database (a ``postgresql://`` URL), not a file."""
    return pg.is_url(str(target))


def shown(target: str | Path) -> str:
    """A database for a message or a report: a path as it is, a URL without its password."""
    text = str(target)
    if not is_postgres(text):
        return text
    scheme, rest = text.split("://", 1)
    if "@" not in rest:
        return text
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"


def dialect(conn: sqlite3.Connection) -> str:
    """``"sqlite"`` or ``"postgresql"``: for the rare statement the two write differently."""
    return getattr(conn, "dialect", "sqlite")


def connect(path: str | Path) -> sqlite3.Connection:
    """Open the database: a SQLite file (created 0600: it holds terminal secrets and people's
    details), or a PostgreSQL URL (a pooled connection)."""
    if is_postgres(path):
        return pg.connect(str(path))  # type: ignore[return-value]
    ensure_private_sqlite(path)
    uri = str(path).startswith("file:")  # a URI opens as one (simulator.vopr.disk: in memory)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30, uri=uri)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; returns the schema version now in force."""
    if dialect(conn) == "postgresql":
        return pg.migrate(conn, MIGRATIONS)  # type: ignore[arg-type]
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, sql in enumerate(MIGRATIONS[current:], start=current + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return len(MIGRATIONS)


@contextlib.contextmanager
def ingest_txn(conn: sqlite3.Connection, *, exclusive: bool) -> Iterator[bool]:
    """The ingest worker's write transaction; yields whether it is *shared*.

    On SQLite (one writer), or when ``exclusive``, it is :func:`write_txn`: the one write
    lock, nothing else runs. On PostgreSQL otherwise ingest transactions share the write lock
    (:meth:`server.infra.pg.PgConnection.begin_shared_write`): every other writer still waits
    for them, but two ingest processes run at once, so a shared transaction must
    :func:`lock_keys` what it reads then writes (its terminals, cardholders, credentials)
    before reading it, and :func:`lock_tail` before the writes all of them share."""
    if dialect(conn) != "postgresql" or exclusive or conn.in_transaction:
        with write_txn(conn):
            yield False
        return
    conn.begin_shared_write()  # type: ignore[attr-defined]
    try:
        yield True
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def lock_keys(conn: sqlite3.Connection, keys: Iterable[str]) -> None:
    """In a shared :func:`ingest_txn`: lock these keys, all at once, in one order."""
    conn.lock_keys(keys)  # type: ignore[attr-defined]


def lock_tail(conn: sqlite3.Connection) -> None:
    """In a shared :func:`ingest_txn`: take the tail lock (held to the commit)."""
    conn.lock_tail()  # type: ignore[attr-defined]


def _statements(sql: str) -> list[str]:
    out, buf = [], []
    for line in sql.splitlines():
        buf.append(line)
        candidate = "\n".join(buf)
        if candidate.strip() and sqlite3.complete_statement(candidate):
            out.append(candidate)
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf))
    return [s for s in out if s.strip() and not _only_comments(s)]


def _only_comments(s: str) -> bool:
    return all(not ln.strip() or ln.strip().startswith("--") for ln in s.splitlines())


def open_db(path: str | Path) -> sqlite3.Connection:
    """Connect and bring the schema up to date."""
    conn = connect(path)
    migrate(conn)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """How many migrations the database has had (0: an empty database)."""
    if dialect(conn) == "postgresql":
        return pg.schema_version(conn)  # type: ignore[arg-type]
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def like_contains(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its ``%``, ``_`` and ``\\`` taken
    literally (use with ``ESCAPE '\\'``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def get_setting(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


def set_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO settings(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def bump_counter(conn: sqlite3.Connection, name: str, by: int = 1) -> None:
    bump_counters(conn, {name: by})


def bump_counters(conn: sqlite3.Connection, by_name: dict[str, int]) -> None:
    """Add to several counters in one statement (counters moved by zero are left alone)."""
    moved = [(name, by) for name, by in by_name.items() if by]
    if moved:
        conn.execute(
            "INSERT INTO counters(name, value) VALUES "
            + ", ".join(["(?, ?)"] * len(moved))
            + " ON CONFLICT(name) DO UPDATE SET value = counters.value + excluded.value",
            [x for pair in moved for x in pair],
        )


def counter(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


_T = TypeVar("_T")
IN_CHUNK = 400  # values per ``IN (…)`` / ``VALUES …`` lookup: well inside both databases' limits


def chunks(items: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    """``items`` in slices of ``size``, for lookups of many keys in a few queries."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
