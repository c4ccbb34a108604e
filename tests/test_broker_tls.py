"""MQTT over TLS as production runs it: a real Mosquitto with the locked configuration and a
TLS listener whose certificate is signed by the deployment's own CA (a test CA made with
``cryptography``, :mod:`simulator.harness.tls`). The server (``MQTT_CA_FILE``) and a terminal
(``ca_file`` in its configuration) verify the broker's certificate and talk over it; a client
that does not trust that CA, or that speaks plain MQTT to the TLS port, never gets a session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.app import create_app
from server.infra.db import open_db
from server.registry import terminals
from server.service import ServerService
from shared.broker import MosquittoBroker
from shared.clock import SystemClock
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import broker_password
from simulator.harness import tls as pki
from simulator.waiting import wait_until
from terminal.config import TerminalConfig
from terminal.sync import SyncAgent
from tests.helpers import one_terminal_broker_city

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary")


@dataclass
class TlsWorld:
    home: Path
    app: object
    ca: pki.TestCa
    broker: MosquittoBroker
    creds: terminals.TerminalCredentials


@pytest.fixture
def world(tmp_path: Path) -> Iterator[TlsWorld]:
    ca = pki.make_test_ca(tmp_path / "pki")
    app = create_app({"HOME": str(tmp_path), "TESTING": True, "MQTT_CA_FILE": str(ca.ca_file)})
    creds, files = one_terminal_broker_city(app)
    broker = MosquittoBroker(
        password_file=str(files.password_file),
        acl_file=str(files.acl_file),
        tls=(str(ca.ca_file), str(ca.cert_file), str(ca.key_file)),
    ).start()
    try:
        yield TlsWorld(tmp_path, app, ca, broker, creds)
    finally:
        broker.stop()


def test_the_server_and_a_terminal_talk_through_a_tls_broker_they_verify(
    world: TlsWorld, tmp_path: Path
) -> None:
    assert world.broker.url.startswith("mqtts://")
    service = ServerService(world.broker.url, app=world.app, clock=SystemClock()).start()  # type: ignore[arg-type]
    agent = None
    try:
        assert service.link is not None and service.link.wait_connected(20), service.link.last_error
        config = TerminalConfig.from_dict(
            {
                **world.creds.to_json(),
                "server_public_key": world.app.extensions["canteen_server_key"].public_hex,  # type: ignore[attr-defined]
                "broker_url": world.broker.url,
                "server_url": service.base_url,
                "ca_file": str(world.ca.ca_file),
                "heartbeat_s": 0.5,
                "db_path": str(tmp_path / "pi.sqlite"),
            }
        )
        agent = SyncAgent(config, SystemClock()).start()
        conn = open_db(world.app.config["DATABASE"])  # type: ignore[attr-defined]
        try:  # the terminal's status crossed the TLS broker and the server recorded it
            seen = lambda: conn.execute(  # noqa: E731
                "SELECT last_status_ms FROM terminals WHERE id = 'T0001'"
            ).fetchone()[0]
            assert wait_until(lambda: seen() is not None, 30)
        finally:
            conn.close()
    finally:
        if agent is not None:
            agent.stop()
        service.stop()


def test_a_client_that_does_not_trust_the_ca_gets_no_session_and_says_why(
    world: TlsWorld, caplog: pytest.LogCaptureFixture
) -> None:
    password = broker_password(bytes.fromhex(world.creds.secret_hex))
    tls = BrokerAddress("127.0.0.1", world.broker.port, "T0001", password, tls=True)
    plain = BrokerAddress("127.0.0.1", world.broker.port, "T0001", password)
    caplog.set_level(logging.WARNING, logger="shared.mqtt")
    untrusting = MqttLink("T0001", tls, backoff_max_s=0.5).start()  # the system's CAs only
    speaking_plain = MqttLink("T0001", plain, backoff_max_s=0.5).start()
    trusting = MqttLink("T0001", tls, backoff_max_s=0.5, ca_file=str(world.ca.ca_file)).start()
    try:
        assert trusting.wait_connected(20), trusting.last_error  # the same user, with the CA
        assert wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in untrusting.last_error, 20)
        assert untrusting.connects == 0 and not untrusting.connected
        assert any("TLS to 127.0.0.1" in r.getMessage() for r in caplog.records)  # a person is told
        # plain MQTT on the TLS port: the broker drops it before any session
        assert wait_until(lambda: speaking_plain.disconnects > 0 or speaking_plain.connect_failures > 0, 20)
        assert speaking_plain.connects == 0 and not speaking_plain.connected
    finally:
        for link in (untrusting, speaking_plain, trusting):
            link.stop()
