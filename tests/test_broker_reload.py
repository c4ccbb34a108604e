"""The server reloads the broker itself (issue 15): after a revocation the broker drops the
terminal at once — by ``MQTT_RELOAD_COMMAND``, or by SIGHUP to the Mosquitto named in
``MQTT_PID_FILE`` — and a pid file naming some other process is left alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.app import create_app
from server.infra.db import open_db, write_txn
from server.registry import broker_users, terminals
from shared.broker import MosquittoBroker
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import broker_password
from simulator.waiting import wait_until
from tests.helpers import one_terminal_broker_city

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary")


def test_a_stale_pid_file_signals_nothing(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(str(os.getpid()))  # this test's own process: not a Mosquitto
    assert broker_users.reload_broker({"MQTT_PID_FILE": str(pid_file)}) is False
    assert broker_users.reload_broker({"MQTT_PID_FILE": str(tmp_path / "none.pid")}) is False
    assert broker_users.reload_broker({"MQTT_RELOAD_COMMAND": "false"}) is False  # a failing command


@pytest.mark.parametrize("how", ["pid_file", "command"])
def test_revocation_reaches_the_broker_without_a_person(tmp_path: Path, how: str) -> None:
    app = create_app({"HOME": str(tmp_path), "TESTING": True})
    creds, files = one_terminal_broker_city(app)
    conn = open_db(app.config["DATABASE"])
    broker = MosquittoBroker(password_file=str(files.password_file), acl_file=str(files.acl_file)).start()
    address = BrokerAddress(
        "127.0.0.1", broker.port, "T0001", broker_password(bytes.fromhex(creds.secret_hex))
    )
    link = MqttLink("T0001", address, backoff_max_s=0.5).start()
    try:
        assert link.wait_connected(15)
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{broker.pid}\n")
        config = {**app.config, "MQTT_PID_FILE": str(pid_file)}
        if how == "command":
            config.update(MQTT_PID_FILE="", MQTT_RELOAD_COMMAND=f"kill -HUP {broker.pid}")
        with write_txn(conn):
            terminals.revoke(conn, "T0001", 0)
        assert broker_users.apply(conn, config) is True
        assert wait_until(lambda: link.refusals > 0, 15)  # dropped, and refused on reconnecting
    finally:
        link.stop()
        broker.stop()
        conn.close()
