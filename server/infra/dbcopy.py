"""Moving a city's database between SQLite and PostgreSQL (either way), whole and checked.

:func:`copy_database` reads the source in one snapshot and writes every row into an empty
target of the same schema version, in one transaction, in foreign-key order; then it
compares the two: the rows of every table, and the ledger's sums (balances, entries, their
count). The caller runs ``check`` on both as well (``canteen-server migrate-db`` does).

What is not a plain row copy:

* SQLite's implicit ``rowid`` of the tables whose order the code reads
  (:data:`server.infra.pg_sql.ROWID_TABLES`) is carried over, so "the newest card" stays the
  same card;
* ``config_history`` is filled by a trigger on ``deltas``; the copy empties what the trigger
  wrote while the deltas went in and copies the source's rows instead;
* PostgreSQL's identity counters are moved past the copied ids.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from server.infra.db import dialect, schema_version, write_txn
from server.infra.pg_sql import ROWID_TABLES
from shared.errors import DomainError

CHUNK_ROWS = 2_000
DERIVED_LAST = ("config_history",)  # written by a trigger on deltas: copied last, over it
_ROWID_ALIAS = "rowid_copy"  # a rowid read under this name (PostgreSQL rows hide "rowid")


@dataclass
class CopyReport:
    schema_version: int
    tables: dict[str, int] = field(default_factory=dict)  # rows copied, by table
    source_ledger: dict[str, int] = field(default_factory=dict)
    target_ledger: dict[str, int] = field(default_factory=dict)
    target_rows: dict[str, int] = field(default_factory=dict)

    @property
    def matches(self) -> bool:
        return self.tables == self.target_rows and self.source_ledger == self.target_ledger

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tables": self.tables,
            "target_rows": self.target_rows,
            "source_ledger": self.source_ledger,
            "target_ledger": self.target_ledger,
            "matches": self.matches,
        }


def tables(conn: sqlite3.Connection) -> list[str]:
    """The schema's tables, parents before the tables that reference them."""
    if dialect(conn) == "postgresql":
        names = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename <> 'canteen_schema' ORDER BY tablename"
            )
        ]
        refs = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT cl.relname, ref.relname FROM pg_constraint c "
                "JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_class ref ON ref.oid = c.confrelid "
                "WHERE c.contype = 'f'"
            )
        }
    else:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        refs = {(t, r[2]) for t in names for r in conn.execute(f'PRAGMA foreign_key_list("{t}")').fetchall()}
    return _parents_first(names, refs)


def _parents_first(names: list[str], refs: set[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    placed: set[str] = set()
    pending = [n for n in names if n not in DERIVED_LAST]
    while pending:
        ready = [n for n in pending if all(p in placed or p == n for c, p in refs if c == n)]
        if not ready:
            raise RuntimeError(f"a foreign-key cycle among {pending}")
        for n in ready:
            out.append(n)
            placed.add(n)
        pending = [n for n in pending if n not in placed]
    return out + [n for n in DERIVED_LAST if n in names]


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """A table's columns, but not PostgreSQL's stand-in for SQLite's implicit rowid."""
    cur = conn.execute(f"SELECT * FROM {table} LIMIT 0")  # noqa: S608 — a schema table name
    return [d[0] for d in cur.description if d[0] != "rowid"]


def ledger_sums(conn: sqlite3.Connection) -> dict[str, int]:
    """What must be equal on both sides: the sums the ledger is made of."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM entries), (SELECT coalesce(sum(amount_fen), 0) FROM entries), "
        "(SELECT coalesce(sum(balance_fen), 0) FROM accounts), "
        "(SELECT coalesce(sum(abs(balance_fen)), 0) FROM accounts), "
        "(SELECT count(*) FROM sales WHERE status = 'applied'), "
        "(SELECT coalesce(sum(amount_fen), 0) FROM sales WHERE status = 'applied')"
    ).fetchone()
    keys = ("entries", "entries_fen", "balances_sum_fen", "balances_abs_fen", "sales_applied", "sales_fen")
    return {k: int(v) for k, v in zip(keys, row, strict=True)}


def row_counts(conn: sqlite3.Connection, names: list[str]) -> dict[str, int]:
    return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in names}  # noqa: S608


def copy_database(source: sqlite3.Connection, target: sqlite3.Connection) -> CopyReport:
    """Copy every row of ``source`` into the empty, migrated ``target`` (see the module)."""
    version = schema_version(source)
    if schema_version(target) != version:
        raise DomainError(
            "invalid_input",
            f"schema versions differ: source {version}, target {schema_version(target)}; "
            "open both with this version of the server first",
        )
    names = tables(source)
    missing = set(names) - set(tables(target))
    if missing:
        raise DomainError("invalid_input", f"tables missing in the target: {sorted(missing)}")
    filled = {t: n for t, n in row_counts(target, names).items() if n}
    if filled:
        raise DomainError("database_not_empty", f"rows in {sorted(filled)}")
    report = CopyReport(schema_version=version)
    _begin_snapshot(source)
    try:
        with write_txn(target):
            for table in names:
                report.tables[table] = _copy_table(source, target, table)
            _advance_identities(target)
        report.source_ledger = ledger_sums(source)
    finally:
        source.execute("COMMIT")
    report.target_rows = row_counts(target, names)
    report.target_ledger = ledger_sums(target)
    return report


def _begin_snapshot(conn: sqlite3.Connection) -> None:
    if dialect(conn) == "postgresql":
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # one snapshot for every table
    else:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM settings").fetchone()  # the read snapshot starts here


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> int:
    cols = [c for c in columns(source, table) if c in set(columns(target, table))]
    read = list(cols)
    write = list(cols)
    if table in ROWID_TABLES:
        read.insert(0, f"rowid AS {_ROWID_ALIAS}")
        write.insert(0, "rowid")
    if table in DERIVED_LAST:
        target.execute(f"DELETE FROM {table}")  # noqa: S608 — what the trigger wrote meanwhile
    order = "rowid" if table in ROWID_TABLES else "1"
    cur = source.execute(f"SELECT {', '.join(read)} FROM {table} ORDER BY {order}")  # noqa: S608
    insert = f"INSERT INTO {table}({', '.join(write)}) VALUES ({', '.join('?' * len(write))})"  # noqa: S608
    copied = 0
    while True:
        rows = cur.fetchmany(CHUNK_ROWS)
        if not rows:
            return copied
        target.executemany(insert, [tuple(r) for r in rows])
        copied += len(rows)


def _advance_identities(conn: sqlite3.Connection) -> None:
    """PostgreSQL: each identity column's counter moves past the largest copied id."""
    if dialect(conn) != "postgresql":
        return
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall():
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
        ).fetchone()
