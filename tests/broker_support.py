"""What the locked-broker tests (Mosquitto and NATS) share: a city of one unit and one
canteen, MQTT links that log in as a terminal or the server, and an inbox for messages."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from server.app import create_app
from server.infra.db import open_db, write_txn
from server.registry import broker_users, terminals
from server.registry.units import add_canteen, add_unit
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import broker_password


def one_canteen_app(home: Path) -> tuple[Flask, sqlite3.Connection]:
    """A test server app in ``home`` with unit U01 and its canteen C01, and a connection."""
    app = create_app({"HOME": str(home), "TESTING": True})
    conn = open_db(app.config["DATABASE"])
    with write_txn(conn):
        add_unit(conn, "U01", "市财政局")
        add_canteen(conn, "C01", "一食堂", "U01", now_ms=0)
    return app, conn


class BrokerLogins:
    """For a dataclass with ``files`` (the server's broker files), ``broker`` (with a
    ``port``) and ``creds`` (terminal id -> credentials)."""

    files: broker_users.BrokerFiles
    broker: Any
    creds: dict[str, terminals.TerminalCredentials]

    def link(
        self, user: str | None, password: str | None = None, client_id: str | None = None, **kw: Any
    ) -> MqttLink:
        """A started MQTT link as ``user`` (its derived password unless given)."""
        if user is not None and password is None:
            password = (
                broker_users.server_password(self.files.server_password_file)
                if user == "server"
                else broker_password(bytes.fromhex(self.creds[user].secret_hex))
            )
        address = BrokerAddress("127.0.0.1", self.broker.port, user, password)
        return MqttLink(client_id or user or "anonymous", address, backoff_max_s=0.5, **kw).start()


def inbox() -> tuple[list[tuple[str, bytes]], Callable[[str, bytes], None]]:
    """A list and the ``on_message`` callback that appends (topic, payload) to it."""
    got: list[tuple[str, bytes]] = []
    return got, lambda t, p: got.append((t, p))
