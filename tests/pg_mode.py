"""The test suite on PostgreSQL (``CANTEEN_TEST_DATABASE=postgresql``, ``make test-pg``).

The session starts its own PostgreSQL (``shared.pg_server``: initdb into a temporary folder,
the project's settings, a free port; ``fsync`` off, as a test cluster holds nothing worth a
power cut) and migrates one template database. Each test then gets databases that look new:

* every server database the test opens in this process — ``open_db(path)`` of any SQLite
  path, an app's ``DATABASE``, ``:memory:`` — is a PostgreSQL database instead: one per
  path (an empty file stays at the path, so "is there a database in this folder" still
  holds), a new one for every ``:memory:``; a module-scoped fixture's databases (opened
  between tests) last for the session;
* a ``canteen-server`` the test starts as a child process gets ``CANTEEN_DATABASE_URL``
  for its data folder from :func:`child_env` (empty on SQLite).

Databases come from a free list (made from the template the first time) and are emptied
after the test: its connections closed, every row deleted, identities restarted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from server.infra import db, pg
from shared.pg_server import FAST_UNSAFE, PostgresServer, available
from shared.private_files import ensure_private_sqlite

ENV = "CANTEEN_TEST_DATABASE"
URL_ENV = "CANTEEN_TEST_PG_URL"  # an existing server's admin URL instead of starting one
TEMPLATE = "canteen_template"


def wanted() -> bool:
    return os.environ.get(ENV, "sqlite").lower() in ("postgresql", "postgres", "pg")


class PgCluster:
    """The session's PostgreSQL: a template database and a free list of test databases."""

    def __init__(self) -> None:
        self.server: PostgresServer | None = None
        admin_url = os.environ.get(URL_ENV)
        if admin_url is None:
            if not available():
                raise RuntimeError(
                    "CANTEEN_TEST_DATABASE=postgresql needs the PostgreSQL server (initdb, pg_ctl): "
                    "apt-get install postgresql, or set CANTEEN_TEST_PG_URL to an admin URL"
                )
            self.server = PostgresServer(settings=FAST_UNSAFE).start()
            admin_url = self.server.url
        self.admin_url = admin_url
        self.admin = psycopg.connect(admin_url, autocommit=True)
        self.prefix = f"canteen_t{os.getpid()}_"
        self._free: list[str] = []
        self._made = 0
        self.admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        self.admin.execute(f"CREATE DATABASE {TEMPLATE}")
        conn = db.open_db(self.url(TEMPLATE))
        self.tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'canteen_schema' ORDER BY tablename"
            )
        ]
        self.sequences = [
            r[0] for r in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
        ]
        conn.close()
        pg.close_pools(self.url(TEMPLATE))

    def url(self, name: str) -> str:
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{name}"

    def take(self) -> str:
        if self._free:
            return self._free.pop()
        self._made += 1
        name = f"{self.prefix}{self._made}"
        self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
        return self.url(name)

    def give_back(self, url: str) -> None:
        """Close every connection to it, empty it, and put it on the free list."""
        pg.close_pools(url)
        name = url.rsplit("/", 1)[1]
        self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            with psycopg.connect(url, autocommit=True) as c:
                c.execute(self._reset_sql().encode())
        except psycopg.Error:
            self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        self._free.append(url)

    def _reset_sql(self) -> str:
        deletes = "".join(f"DELETE FROM {t};" for t in self.tables)
        restarts = "".join(f"ALTER SEQUENCE {s} RESTART;" for s in self.sequences)
        return f"SET session_replication_role = replica;{deletes}{restarts}RESET session_replication_role;"

    def stop(self) -> None:
        pg.close_pools()
        for url in self._free:
            self.admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
        self.admin.close()
        if self.server is not None:
            self.server.stop()


class PerTestDatabases:
    """One test's databases: SQLite paths mapped to PostgreSQL URLs (see the module)."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.used: list[str] = []
        self.by_path: dict[str, str] = {}

    def url_for(self, target: str | Path) -> str:
        key = os.fspath(target)
        if db.is_postgres(key):
            return key
        if key == ":memory:":
            return self._another()
        key = os.path.abspath(key)
        if key not in self.by_path:
            ensure_private_sqlite(key)  # the folder has "its database" from now on
            self.by_path[key] = self._another()
        return self.by_path[key]

    def _another(self) -> str:
        url = self.cluster.take()
        self.used.append(url)
        return url

    def connect_wrapper(self, real: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def connect(target: str | Path) -> Any:
            if os.fspath(target) == ":memory:":
                return self._memory(real)
            return real(self.url_for(target))

        return connect

    def _memory(self, real: Callable[[Any], Any]) -> Any:
        """A database that lives as long as its connection, as SQLite's ``:memory:`` does
        (a property test opens one per example: each goes back to the free list)."""
        url = self._another()
        conn = real(url)
        close = conn.close

        def close_and_give_back() -> None:
            close()
            if url in self.used:
                self.used.remove(url)
                self.cluster.give_back(url)

        conn.close = close_and_give_back
        return conn

    def close(self) -> None:
        for url in self.used:
            self.cluster.give_back(url)


_current: PerTestDatabases | None = None


def install(cluster: PgCluster) -> Callable[[], None]:
    """Route every server database this process opens to PostgreSQL for the session: to the
    running test's databases, or — for a module- or session-scoped fixture, set up between
    tests — to the session's own, kept until the session ends. Returns the undo."""
    real = db.connect
    session = PerTestDatabases(cluster)

    def connect(target: str | Path) -> Any:
        key = os.fspath(target)
        known = key != ":memory:" and os.path.abspath(key) in session.by_path  # a fixture's
        return (session if known or _current is None else _current).connect_wrapper(real)(target)

    db.connect = connect  # type: ignore[assignment]

    def undo() -> None:
        db.connect = real  # type: ignore[assignment]
        session.close()

    return undo


def databases_for_test(cluster: PgCluster) -> Iterator[PerTestDatabases]:
    global _current
    dbs = PerTestDatabases(cluster)
    _current = dbs
    try:
        yield dbs
    finally:
        _current = None
        dbs.close()


def child_env(home: str | Path) -> dict[str, str]:
    """Environment for a ``canteen-server`` child process working on ``home``: on PostgreSQL
    the URL of that folder's database (the one this process maps it to), else nothing."""
    if _current is None:
        return {}
    path = os.path.join(os.fspath(home), "server", "canteen.sqlite")
    return {"CANTEEN_DATABASE_URL": _current.url_for(path)}
