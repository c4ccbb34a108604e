"""Shared fixtures: a real broker for the session, the Flask app, a server database.

The broker is a real Mosquitto started from the project's config on a free port when the
``mosquitto`` binary exists (CI installs it), else the embedded amqtt broker; the test
run's header says which. ``CANTEEN_TEST_BROKER=embedded|mosquitto`` forces one.

The server's database is SQLite unless ``CANTEEN_TEST_DATABASE=postgresql`` (``make
test-pg``): then every server database a test opens is a PostgreSQL one, on a server the
session starts itself (:mod:`tests.pg_mode`). A test that is about SQLite itself is marked
``sqlite_only`` with its reason and skipped there.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from server.infra.db import open_db
from shared import pg_server
from shared.broker import MosquittoBroker, start_broker
from shared.clock import FakeClock, ms_from_china
from tests import pg_mode

# the real face photos (MIT, from the face_recognition project) ship with the tests
FACES_DIR = Path(__file__).resolve().parent / "data" / "faces"


def _broker_kind() -> str:
    forced = os.environ.get("CANTEEN_TEST_BROKER")
    if forced:
        return forced
    return "mosquitto" if MosquittoBroker.available() else "embedded"


def pytest_report_header(config: pytest.Config) -> list[str]:
    kind = _broker_kind()
    why = "binary found" if kind == "mosquitto" else "mosquitto not installed: embedded amqtt"
    database = "PostgreSQL (a server started for the session)" if pg_mode.wanted() else "SQLite"
    return [f"MQTT broker for integration tests: {kind} ({why})", f"server database: {database}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not pg_mode.wanted():
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "about SQLite")
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


@pytest.fixture(scope="session", autouse=True)  # before any module's fixtures open a database
def pg_cluster() -> Iterator[pg_mode.PgCluster | None]:
    if not pg_mode.wanted():
        yield None
        return
    cluster = pg_mode.PgCluster()
    undo = pg_mode.install(cluster)
    yield cluster
    undo()
    cluster.stop()


@pytest.fixture(scope="session")
def pg_admin_url(pg_cluster) -> Iterator[str]:  # noqa: ANN001
    """An admin URL of a PostgreSQL server, whatever the suite's database: the session's
    in PostgreSQL mode, else one started for this (``shared.pg_server``); skipped where
    PostgreSQL is not installed (CI installs it)."""
    if pg_cluster is not None:
        yield pg_cluster.admin_url
        return
    if not pg_server.available():
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = pg_server.PostgresServer(settings=pg_server.FAST_UNSAFE).start()
    yield server.url
    server.stop()


@pytest.fixture(autouse=True)
def _server_databases(pg_cluster) -> Iterator[object]:  # noqa: ANN001
    """On PostgreSQL: this test's databases (tests.pg_mode); on SQLite: nothing to do."""
    if pg_cluster is None:
        yield None
        return
    yield from pg_mode.databases_for_test(pg_cluster)


@pytest.fixture(scope="session")
def broker() -> Iterator[object]:
    b = start_broker(_broker_kind())
    yield b
    b.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(ms_from_china("2026-01-06T12:00"))


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock):  # noqa: ANN201
    return create_app({"HOME": str(tmp_path), "TESTING": True}, clock=clock)


@pytest.fixture
def client(app):  # noqa: ANN001, ANN201
    return app.test_client()


@pytest.fixture
def conn(app) -> Iterator[sqlite3.Connection]:  # noqa: ANN001
    c = open_db(app.config["DATABASE"])
    yield c
    c.close()
