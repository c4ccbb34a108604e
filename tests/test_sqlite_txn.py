"""shared.sqlite_txn.write_txn: all or nothing; nested use joins the outer transaction,
an inner failure undoing only the inner part."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shared.sqlite_txn import write_txn


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    c.execute("CREATE TABLE t (x INTEGER)")
    return c


def _rows(conn: sqlite3.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")]


def test_a_transaction_commits_and_holds_the_write_lock(conn: sqlite3.Connection, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None, timeout=0)
    with write_txn(conn) as c:
        assert c is conn and conn.in_transaction
        c.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError):  # BEGIN IMMEDIATE: the lock up front
            other.execute("BEGIN IMMEDIATE")
    assert not conn.in_transaction
    assert [r[0] for r in other.execute("SELECT x FROM t")] == [1]


def test_a_failure_rolls_back_everything_and_is_raised(conn: sqlite3.Connection) -> None:
    with pytest.raises(ZeroDivisionError), write_txn(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError
    assert not conn.in_transaction and _rows(conn) == []


def test_an_inner_failure_undoes_only_the_inner_part(conn: sqlite3.Connection) -> None:
    with write_txn(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(KeyError), write_txn(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise KeyError("x")
        with write_txn(conn):
            conn.execute("INSERT INTO t VALUES (3)")
        assert conn.in_transaction
    assert not conn.in_transaction and _rows(conn) == [1, 3]


def test_an_outer_failure_undoes_the_committed_inner_part(conn: sqlite3.Connection) -> None:
    with pytest.raises(RuntimeError), write_txn(conn):
        with write_txn(conn):
            conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError
    assert _rows(conn) == []
