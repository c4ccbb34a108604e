"""Shared fixtures: a real broker for the session, the Flask app, a server database.

The broker is a real Mosquitto started from the project's config on a free port when the
``mosquitto`` binary exists (CI installs it), else the embedded amqtt broker; the test
run's header says which. ``CANTEEN_TEST_BROKER=embedded|mosquitto`` forces one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.app import create_app
from server.infra.db import open_db
from shared.broker import MosquittoBroker, start_broker
from shared.clock import FakeClock, ms_from_china

# the real face photos (MIT, from the face_recognition project) ship with the tests
FACES_DIR = Path(__file__).resolve().parent / "data" / "faces"


def _broker_kind() -> str:
    forced = os.environ.get("CANTEEN_TEST_BROKER")
    if forced:
        return forced
    return "mosquitto" if MosquittoBroker.available() else "embedded"


def pytest_report_header(config: pytest.Config) -> str:
    kind = _broker_kind()
    why = "binary found" if kind == "mosquitto" else "mosquitto not installed: embedded amqtt"
    return f"MQTT broker for integration tests: {kind} ({why})"


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
