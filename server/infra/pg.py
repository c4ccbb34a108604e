"""PostgreSQL for the server, behind the same small interface as its SQLite connection.

The server's modules call ``conn.execute(sql, params)`` with SQLite's dialect and read rows
by index or by name; :class:`PgConnection` gives them exactly that on PostgreSQL (psycopg 3,
connections from a psycopg_pool pool per database URL), so their SQL stays as it is:

* statements are translated once each (:mod:`server.infra.pg_sql`, cached);
* rows are :class:`Row` (like ``sqlite3.Row``: index, case-insensitive name, ``keys()``);
  integer parameters are BIGINT; a whole-number ``numeric`` (``sum`` of a BIGINT column)
  comes back as ``int``, another as
  ``float`` (``avg``), a boolean expression as 1/0, as SQLite returns them; Python ``bool``
  parameters are sent as 1/0 (the schema has no boolean columns, as in SQLite);
* errors are raised as subclasses of ``sqlite3``'s (``IntegrityError`` for a broken
  constraint, ``OperationalError`` for a lost connection or a lock wait that timed out), so
  the code that catches ``sqlite3.Error`` keeps working; the original is ``__cause__``;
* ``BEGIN IMMEDIATE`` — SQLite's "take the write lock now" — begins a transaction and takes
  one transaction-scoped advisory lock (:data:`WRITE_LOCK`): writers queue one at a time as
  they do on SQLite, so no read-then-write in a write transaction can interleave with
  another process's (each statement then sees what the previous writer committed: READ
  COMMITTED); readers never wait (MVCC). ``BEGIN`` alone is a read transaction: REPEATABLE
  READ, one snapshot for all its reads, as SQLite gives a read transaction;
* the ingest worker's transactions alone take that lock in *shared* mode
  (:meth:`PgConnection.begin_shared_write`), so two ingest processes run side by side; what
  they would race on they serialize themselves: per-key locks taken up front in one order
  (:meth:`PgConnection.lock_keys`: terminals, cardholders, credentials) and one exclusive
  tail lock (:meth:`PgConnection.lock_tail`) for the writes they all share, held to the commit
  (``docs/scaling.md``, "Two ingest workers over one");
* a connection the server closed (PostgreSQL restarted, the network cut it) is replaced by
  a fresh one at the next statement, so a long-lived worker's connection outlives a database
  restart; but not inside a transaction the caller began: that transaction is lost, its
  statements fail until the caller's ``ROLLBACK`` (which then succeeds: there is nothing
  left to roll back);
* the tuning ``PRAGMA``\\ s SQLite needs (cache size, checkpoints, …) are accepted and do
  nothing; ``PRAGMA user_version`` reads the schema version.

Only this module imports psycopg.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import adapt, postgres
from psycopg.pq import TransactionStatus
from psycopg.types.numeric import Int8Dumper
from psycopg_pool import ConnectionPool

from server.infra import pg_sql, schema_pg

log = logging.getLogger(__name__)

# advisory lock keys (one 64-bit namespace per database): the single writer, the migrator;
# run_once locks hash their names into the range above these
WRITE_LOCK = 0x43414E5445454E01  # "CANTEEN" + 01
MIGRATE_LOCK = 0x43414E5445454E02
TAIL_LOCK = 0x43414E5445454E03  # ingest's shared writes, to the commit (:meth:`PgConnection.lock_tail`)
# ingest's per-key locks: the two-int form (a namespace apart from the bigint keys above and
# run_once's), this first int and a 32-bit hash of the key; a hash collision only makes two
# keys queue as one
KEY_SPACE = 0x43414E54  # "CANT"

POOL_MAX_SIZE = 20  # connections per database URL and process (requests + long-lived workers)
LOCK_TIMEOUT = "30s"  # as SQLite's busy_timeout: a writer waits this long for the lock, then fails

_TUNING_PRAGMA = re.compile(
    r"^\s*PRAGMA\s+(cache_size|wal_autocheckpoint|synchronous|journal_mode|busy_timeout|foreign_keys|"
    r"temp_store|mmap_size|optimize)\b",
    re.I,
)
_USER_VERSION = re.compile(r"^\s*PRAGMA\s+user_version\s*$", re.I)
_BEGIN_WRITE = re.compile(r"^\s*BEGIN\s+(IMMEDIATE|EXCLUSIVE)(\s+TRANSACTION)?\s*;?\s*$", re.I)
_ENDS_TXN = re.compile(r"^\s*(COMMIT|END|ROLLBACK)(\s+TRANSACTION)?\s*;?\s*$", re.I)
_BEGINS_TXN = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION)\b", re.I)  # any form, a script's start too
_ROLLBACK = re.compile(r"^\s*ROLLBACK(\s+TRANSACTION)?\s*;?\s*$", re.I)
_BEGIN_READ = re.compile(r"^\s*BEGIN(\s+DEFERRED)?(\s+TRANSACTION)?\s*;?\s*$", re.I)


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


# -- errors: sqlite3's classes, so callers catch one family --------------------------------


class PgIntegrityError(sqlite3.IntegrityError):
    """A PostgreSQL constraint violation (unique key, CHECK, foreign key, NOT NULL)."""


class PgOperationalError(sqlite3.OperationalError):
    """A PostgreSQL connection, lock-timeout, deadlock or statement error."""


class PgDataError(sqlite3.DataError):
    """A value PostgreSQL refused (out of range, wrong type)."""


class PgProgrammingError(sqlite3.ProgrammingError):
    """A connection used after :meth:`PgConnection.close`, as SQLite refuses one."""


def _mapped(exc: psycopg.Error) -> sqlite3.Error:
    cls: type[sqlite3.Error]
    if isinstance(exc, psycopg.IntegrityError):
        cls = PgIntegrityError
    elif isinstance(exc, psycopg.DataError):
        cls = PgDataError
    else:
        cls = PgOperationalError
    out = cls(str(exc).strip())
    out.sqlstate = exc.sqlstate  # type: ignore[attr-defined]
    return out


# -- rows and values as SQLite gives them -------------------------------------------------


class Row(tuple):
    """A result row: by index, by (case-insensitive) column name, ``keys()``, ``dict(row)``."""

    __slots__ = ()
    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._index[key.lower()])
            except KeyError:
                raise IndexError(f"No item with that key: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


@functools.lru_cache(maxsize=2048)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        index.setdefault(n.lower(), i)
    return type("Row", (Row,), {"__slots__": (), "_names": names, "_index": index})


def _row_factory(cursor: psycopg.Cursor[Any]) -> Any:
    desc = cursor.description
    if desc is None:
        return tuple
    names = tuple(d.name for d in desc)
    if "rowid" in names:  # SQLite's implicit rowid never shows in a row (pg_sql.ROWID_TABLES)
        keep = [i for i, n in enumerate(names) if n != "rowid"]
        cls = _row_class(tuple(names[i] for i in keep))
        return lambda values: cls(values[i] for i in keep)
    cls = _row_class(names)
    return cls


class _NumericLoader(adapt.Loader):
    def load(self, data: Any) -> int | float:
        text = bytes(data)
        return float(text) if b"." in text or b"N" in text else int(text)


class _BoolLoader(adapt.Loader):
    def load(self, data: Any) -> int:
        return 1 if bytes(data) == b"t" else 0


class _BoolDumper(adapt.Dumper):
    oid = postgres.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configure(raw: psycopg.Connection[Any]) -> None:
    raw.adapters.register_loader("numeric", _NumericLoader)
    raw.adapters.register_loader("bool", _BoolLoader)
    raw.adapters.register_dumper(bool, _BoolDumper)
    raw.adapters.register_dumper(int, Int8Dumper)  # 64-bit arithmetic on parameters, as SQLite
    raw.row_factory = _row_factory  # type: ignore[assignment]
    raw.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    raw.execute("SET TIME ZONE 'UTC'")


# -- the connection -----------------------------------------------------------------------


class PgCursor:
    """What ``conn.execute`` returns: fetch, iterate, ``rowcount``, ``lastrowid``."""

    __slots__ = ("_cur", "_conn", "_lastrowid")

    def __init__(self, cur: psycopg.Cursor[Any] | None, conn: PgConnection) -> None:
        self._cur = cur
        self._conn = conn
        self._lastrowid: int | None = None

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._has_rows() else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._has_rows() else []

    def fetchmany(self, size: int = 1) -> list[Any]:
        return self._cur.fetchmany(size) if self._has_rows() else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def _has_rows(self) -> bool:
        return self._cur is not None and self._cur.description is not None

    @property
    def description(self) -> Any:
        return self._cur.description if self._cur is not None else None

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount if self._cur is not None else -1

    @property
    def lastrowid(self) -> int | None:
        """The id the last INSERT took from an identity column in this session (SQLite's
        rowid of the inserted row); prefer ``INSERT … RETURNING id``, one round trip less."""
        if self._lastrowid is None:
            try:
                row = self._conn.raw.execute("SELECT lastval()").fetchone()
            except psycopg.errors.ObjectNotInPrerequisiteState:
                return None
            self._lastrowid = int(row[0])
        return self._lastrowid

    def close(self) -> None:
        if self._cur is not None:
            self._cur.close()


class PgConnection:
    """A pooled PostgreSQL connection speaking the server's SQLite dialect (see the module)."""

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection[Any], pool: ConnectionPool | None, url: str) -> None:
        self.raw = raw
        self.url = url
        self._pool = pool
        self._txn = False  # the caller began a transaction (BEGIN …) and has not ended it
        self.reconnects = 0

    @property
    def in_transaction(self) -> bool:
        raw = self._open()
        if raw.closed:
            return self._txn
        return raw.info.transaction_status != TransactionStatus.IDLE

    def _open(self) -> psycopg.Connection[Any]:
        """The raw connection; refused, as by SQLite, once this one was closed."""
        if self.raw is None:
            raise PgProgrammingError("Cannot operate on a closed database.")
        return self.raw

    def _live(self, sql: str) -> bool:
        """Replace a connection the server closed; False: ``sql`` rolls back a transaction
        that was lost with it (nothing left to do). Refused once closed by :meth:`close`."""
        if not self._open().closed:
            return True
        if self._txn:
            if _ROLLBACK.match(sql):
                self._txn = False
                return False
            # a COMMIT too: the transaction is gone, nothing of it was committed
            raise PgOperationalError("the connection was lost in a transaction: roll back")
        try:
            fresh = self._pool.getconn() if self._pool is not None else _connect_raw(self.url)
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        old, self.raw = self.raw, fresh
        if self._pool is not None:
            self._pool.putconn(old)  # the pool sees it closed and drops it
        self.reconnects += 1
        log.warning("database connection lost; a new one is in use (%d so far)", self.reconnects)
        return True

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor:
        if not self._live(sql):
            return PgCursor(None, self)
        special = self._special(sql)
        if special is not None:
            return special
        t = pg_sql.translate(sql)
        try:
            cur = self.raw.execute(t.sql, _ordered(params, t.order))
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        if _BEGINS_TXN.match(sql):  # BEGIN ISOLATION LEVEL …: the caller's transaction too
            self._txn = True
        return PgCursor(cur, self)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> PgCursor:
        self._live(sql)
        t = pg_sql.translate(sql)
        rows = [_ordered(p, t.order) for p in seq]
        if not rows:
            return PgCursor(None, self)
        cur = self.raw.cursor()
        try:
            columns = self._as_arrays(t.sql, rows) if len(rows) >= ARRAY_ROWS else None
            if columns is None:
                cur.executemany(t.sql, rows)
            else:  # one statement for all the rows (rowcount: all of them)
                cur.execute(columns[0], columns[1])
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        return PgCursor(cur, self)

    def _as_arrays(self, sql: str, rows: list[Any]) -> tuple[str, list[list[Any]]] | None:
        """A plain INSERT of many rows as ``INSERT … SELECT * FROM unnest(<one array per
        column>)``, or None where it does not apply: PostgreSQL runs one statement, not one
        per row (about half the time, and half psycopg's Python, for a ledger batch). Only
        when every column is an integer, money or text column and every value an int (not a
        bool) or a str or None; anything else keeps the row-by-row form."""
        shape = _insert_shape(sql)
        if shape is None or isinstance(rows[0], dict):
            return None
        head, table, names, tail = shape
        kinds = _column_kinds(self, table, names)
        if kinds is None:
            return None
        if any(len(r) != len(names) for r in rows):
            return None
        arrays = [list(col) for col in zip(*rows, strict=True)]
        for kind, values in zip(kinds, arrays, strict=True):
            wanted = str if kind == "text" else int  # money (numeric): whole numbers only
            if any(v is not None and type(v) is not wanted for v in values):
                return None
        casts = ", ".join(f"%s::{kind}[]" for kind in kinds)
        return f"{head} SELECT * FROM unnest({casts}){tail}", arrays

    def executescript(self, sql: str) -> None:
        """Several statements without parameters, translated (a migration)."""
        self._live(sql)
        self._run(pg_sql.translate_script(sql))

    def _run(self, sql: str) -> None:
        try:
            self.raw.execute(sql.encode())  # bytes: no placeholder parsing, simple protocol
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        if _BEGINS_TXN.match(sql):  # the migrator's "BEGIN; SELECT pg_advisory_xact_lock(…)"
            self._txn = True

    def _special(self, sql: str) -> PgCursor | None:
        if _BEGIN_WRITE.match(sql):
            self._run(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            return PgCursor(None, self)
        if _BEGIN_READ.match(sql):  # one snapshot for every read, as SQLite's read transaction
            self._run("BEGIN ISOLATION LEVEL REPEATABLE READ")
            return PgCursor(None, self)
        if _ENDS_TXN.match(sql):
            self._txn = False
            return None
        if sql.lstrip()[:6].upper() != "PRAGMA":
            return None
        if _TUNING_PRAGMA.match(sql):
            return PgCursor(None, self)
        if _USER_VERSION.match(sql):
            return self.execute("SELECT version FROM canteen_schema")
        raise pg_sql.NotPortable(f"PRAGMA on PostgreSQL: {sql.strip()}")

    def begin_shared_write(self) -> None:
        """Begin an ingest transaction: :data:`WRITE_LOCK` in shared mode, so ingest
        transactions run side by side while every other writer (``BEGIN IMMEDIATE``, exclusive)
        waits for them and they for it; then :meth:`lock_keys` and :meth:`lock_tail`."""
        self._live("BEGIN")
        self._run(f"BEGIN; SELECT pg_advisory_xact_lock_shared({WRITE_LOCK})")

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Transaction-scoped exclusive locks on these keys (terminals, cardholders, …), in
        one statement, in ascending lock order: two transactions that take their keys this
        way never deadlock on them."""
        ids = sorted({key_id(k) for k in keys})
        if not ids:
            return
        try:  # unnest keeps the array's order, so the locks are taken in it
            self.raw.execute(
                "SELECT count(pg_advisory_xact_lock(%s::int4, k)) FROM unnest(%s::int4[]) AS k",
                (KEY_SPACE, ids),
            )
        except psycopg.Error as exc:
            raise _mapped(exc) from exc

    def lock_tail(self) -> None:
        """The exclusive lock of the writes every ingest transaction shares (payables, sums,
        counters, the delta and its version), held to the commit: taken last."""
        self._run(f"SELECT pg_advisory_xact_lock({TAIL_LOCK})")

    def commit(self) -> None:
        if self.in_transaction and self._live("COMMIT"):
            self._txn = False
            self._run("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction and self._live("ROLLBACK"):
            self._txn = False
            self._run("ROLLBACK")

    def close(self) -> None:
        raw, self.raw = self.raw, None  # type: ignore[assignment]
        if raw is None:
            return
        if self._pool is None:
            raw.close()
            return
        if raw.info.transaction_status != TransactionStatus.IDLE:
            try:
                raw.execute("ROLLBACK")
            except psycopg.Error as exc:  # a broken connection: the pool checks and replaces it
                log.warning("database connection returned broken (%s); the pool replaces it", exc)
        self._pool.putconn(raw)

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ``executemany`` of a plain INSERT: the head up to VALUES, the table, its column list, one
# row of bare placeholders, and nothing after it but ON CONFLICT DO NOTHING (an upsert's rows
# could meet one another, which one statement refuses)
_INSERT_ROWS = re.compile(
    r"^\s*(INSERT\s+INTO\s+(\w+)\s*\(([^()]*)\))\s*VALUES\s*\((?:\s*%s\s*,)*\s*%s\s*\)"
    r"(\s+ON\s+CONFLICT\s+DO\s+NOTHING)?\s*$",
    re.I,
)
ARRAY_ROWS = 8  # fewer rows go row by row: not worth the arrays
_KINDS: dict[tuple[str, str], dict[str, str]] = {}  # (url, table) → column → bigint / text / other
_KINDS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=256)
def _insert_shape(sql: str) -> tuple[str, str, tuple[str, ...], str] | None:
    m = _INSERT_ROWS.match(sql)
    if m is None:
        return None
    names = tuple(n.strip().strip('"') for n in m.group(3).split(","))
    return m.group(1), m.group(2).lower(), names, m.group(4) or ""


def _column_kinds(conn: PgConnection, table: str, names: tuple[str, ...]) -> list[str] | None:
    """``bigint``, ``numeric`` (money: ``canteen_fen``) or ``text`` for each named column (a
    domain counts as its base type, its check still applies on insert), or None if one is of
    another type; read from the catalog once per database and table."""
    key = (conn.url, table)
    with _KINDS_LOCK:
        known = _KINDS.get(key)
    if known is None or any(n not in known for n in names):  # a column added by a migration
        known = {}
        for name, base in conn.raw.execute(
            "SELECT a.attname, format_type(coalesce(nullif(t.typbasetype, 0), t.oid), NULL) "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            (table,),
        ):
            known[name] = base if base in ("bigint", "numeric", "text") else "other"
        with _KINDS_LOCK:
            _KINDS[key] = known
    kinds = [known.get(n, "other") for n in names]
    return None if "other" in kinds else kinds


def key_id(key: str) -> int:
    """The 32-bit lock id of an ingest key (signed, as PostgreSQL's int4)."""
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _ordered(params: Any, order: tuple[int, ...] | None) -> Any:
    if order is None or isinstance(params, dict):
        return params
    return tuple(params[i] for i in order)


# -- pools and connecting -----------------------------------------------------------------

_pools: dict[str, ConnectionPool] = {}
_pools_lock = threading.Lock()


def _pool(url: str) -> ConnectionPool:
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            pool = ConnectionPool(
                url,
                kwargs={"autocommit": True},
                min_size=1,
                max_size=POOL_MAX_SIZE,
                configure=_configure,
                check=ConnectionPool.check_connection,
                name="canteen",
                open=True,
            )
            _pools[url] = pool
        return pool


def connect(url: str, *, pooled: bool = True) -> PgConnection:
    """A connection to the database at ``url`` (from its pool unless ``pooled`` is false)."""
    if not pooled:
        try:
            raw = _connect_raw(url)
        except psycopg.Error as exc:
            raise _mapped(exc) from exc
        return PgConnection(raw, None, url)
    try:
        raw = _pool(url).getconn()
    except psycopg.Error as exc:
        raise _mapped(exc) from exc
    return PgConnection(raw, _pools[url], url)


def _connect_raw(url: str) -> psycopg.Connection[Any]:
    raw = psycopg.connect(url, autocommit=True)
    _configure(raw)
    return raw


def close_pools(url: str | None = None) -> None:
    """Close the pool of ``url`` (every pool when None): its connections end."""
    with _pools_lock:
        urls = [url] if url is not None else list(_pools)
        pools = [_pools.pop(u) for u in urls if u in _pools]
    for u in urls:
        _migrated.discard(u)
    for p in pools:
        p.close()


# -- the schema ---------------------------------------------------------------------------

_migrated: set[str] = set()


def migrate(conn: PgConnection, migrations: list[str]) -> int:
    """Apply pending migrations (translated, or :data:`schema_pg.OVERRIDES`) and the SQLite
    compatibility functions, in one transaction under an advisory lock, so two processes
    starting together migrate once. Returns the schema version now in force."""
    if conn.url in _migrated:
        return len(migrations)
    conn._run(f"BEGIN; SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
    try:
        conn._run(
            "CREATE TABLE IF NOT EXISTS canteen_schema (version BIGINT NOT NULL, compat BIGINT NOT NULL)"
        )
        row = conn.raw.execute("SELECT version, compat FROM canteen_schema").fetchone()
        if row is None:
            conn._run("INSERT INTO canteen_schema VALUES (0, 0)")
            row = (0, 0)
        current, compat = int(row[0]), int(row[1])
        if compat < schema_pg.COMPAT_VERSION:
            conn._run(schema_pg.COMPAT)
        for number in range(current + 1, len(migrations) + 1):
            override = schema_pg.OVERRIDES.get(number)
            conn.executescript(override if override is not None else migrations[number - 1])
        conn.raw.execute(
            "UPDATE canteen_schema SET version = %s, compat = %s",
            (max(current, len(migrations)), max(compat, schema_pg.COMPAT_VERSION)),
        )
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    _migrated.add(conn.url)
    return max(current, len(migrations))


def schema_version(conn: PgConnection) -> int:
    """The schema version of the database (0: not created yet)."""
    row = conn.raw.execute("SELECT to_regclass('canteen_schema') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    row = conn.raw.execute("SELECT version FROM canteen_schema").fetchone()
    return int(row[0]) if row else 0
