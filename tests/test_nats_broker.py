"""NATS as the project's MQTT broker (issue 16): a real nats-server started from the
configuration ``canteen-server nats-config`` renders, with the authorization block the
server writes from its terminals table, and the project's own :class:`MqttLink` through it.
Each negative is checked against a later message that must arrive (MQTT keeps one
publisher's order) or against the broker's own refusal."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.app import create_app
from server.cli import main as server_cli
from server.infra.db import open_db, write_txn
from server.registry import broker_users, terminals
from shared.clock import FakeClock, ms_from_china
from shared.nats_broker import NatsBroker, mqtt_to_subject, render_nats_conf
from shared.protocol import topics
from simulator.harness.cluster import Cluster
from simulator.waiting import wait_until
from terminal.authorize import TapRequest
from tests.broker_support import BrokerLogins, inbox, one_canteen_app

pytestmark = pytest.mark.skipif(
    not NatsBroker.available(), reason="needs nats-server (Debian package nats-server; .ci/run installs it)"
)


@dataclass
class LockedNats(BrokerLogins):
    app: object
    files: broker_users.BrokerFiles
    auth_file: Path
    broker: NatsBroker
    creds: dict[str, terminals.TerminalCredentials]


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[LockedNats]:
    app, conn = one_canteen_app(tmp_path)
    creds = {}
    with write_txn(conn):
        for tid in ("T0001", "T0002"):
            creds[tid] = terminals.provision(conn, "C01", 0, "00" * 32, tid)
    files = broker_users.BrokerFiles.from_config(app.config)
    data_dir = tmp_path / "nats"
    auth_file = data_dir / "authorization.conf"
    broker_users.write_nats_authorization(conn, files.server_password_file, auth_file)
    conn.close()
    broker = NatsBroker(data_dir=str(data_dir), authorization_file=str(auth_file)).start()
    yield LockedNats(app, files, auth_file, broker, creds)
    broker.stop()


def test_the_rendered_configuration_is_locked_and_has_what_nats_mqtt_needs() -> None:
    conf = render_nats_conf(server_name="n1", mqtt_port=1883, data_dir="/d", authorization_file="/d/a.conf")
    assert 'server_name: "n1"' in conf and 'store_dir: "/d/jetstream"' in conf
    assert 'include "a.conf"' in conf  # relative: nats-server resolves it against nats.conf's folder
    with pytest.raises(ValueError):
        render_nats_conf(server_name="n1", mqtt_port=1883, data_dir="/d")  # never open by accident


def test_mqtt_filters_map_to_nats_subjects() -> None:
    assert mqtt_to_subject(topics.ALL_STATUS) == "canteen.v1.t.*.up.status"
    assert mqtt_to_subject("canteen/v1/t/T1/down/#") == "canteen.v1.t.T1.down.>"
    for bad in ("canteen/v1/t/*/up/#", "canteen/v1/t/a.b/up", "canteen//x"):
        with pytest.raises(ValueError):
            mqtt_to_subject(bad)  # an id NATS would read as a wildcard or a level never reaches it


def test_nats_config_cli_renders_and_writes_the_users(tmp_path: Path) -> None:
    assert CliRunner().invoke(server_cli, ["--home", str(tmp_path), "init"]).exit_code == 0
    result = CliRunner().invoke(
        server_cli,
        ["--home", str(tmp_path), "nats-config", "--port", "1884", "--cluster-port", "6222",
         "--route", "nats-route://10.0.0.2:6222"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "jetstream" in result.stdout and 'routes: ["nats-route://10.0.0.2:6222"]' in result.stdout
    auth = (tmp_path / "nats" / "authorization.conf").read_text()
    assert '{user: "server", password: "$2a$' in auth
    files = broker_users.BrokerFiles.from_config(create_app({"HOME": str(tmp_path), "TESTING": True}).config)
    password = files.server_password_file.read_text().strip()
    assert password not in auth and password not in result.output  # a bcrypt hash only, never printed


def test_qos1_and_the_acl_hold_through_nats(locked: LockedNats) -> None:
    server_seen, on_server = inbox()
    t1_seen, on_t1 = inbox()
    server = locked.link("server", subscriptions=[(f"{topics.PREFIX}/t/+/up/#", 1)], on_message=on_server)
    t1 = locked.link("T0001", subscriptions=[(f"{topics.PREFIX}/t/T0001/down/#", 1)], on_message=on_t1)
    try:
        assert server.wait_connected(10) and t1.wait_connected(10)
        assert t1.publish(topics.sales("T0002"), b"forged")  # NATS drops it (publish violation)
        assert t1.publish(topics.sales("T0001"), b"mine")
        assert wait_until(lambda: (topics.sales("T0001"), b"mine") in server_seen, 30)
        assert server_seen == [(topics.sales("T0001"), b"mine")]
        assert server.publish(topics.ack("T0001"), b"ack")
        assert wait_until(lambda: t1_seen == [(topics.ack("T0001"), b"ack")], 30)
    finally:
        server.stop()
        t1.stop()


@pytest.mark.parametrize("topic", [f"{topics.PREFIX}/t/T0001/down/#", "$MQTT/sub/#", "#"])
def test_a_terminal_cannot_subscribe_beyond_its_own(locked: LockedNats, topic: str) -> None:
    snoop = locked.link("T0002", subscriptions=[(topic, 1)])
    try:
        assert wait_until(lambda: snoop.refusals > 0, 30)
        assert not snoop.connected
    finally:
        snoop.stop()


def test_a_wrong_password_or_no_user_is_refused(locked: LockedNats) -> None:
    for link in (locked.link("T0001", password="guessed"), locked.link(None, client_id="nobody")):
        try:
            assert wait_until(lambda: link.refusals > 0, 30)  # noqa: B023
            assert not link.connected
        finally:
            link.stop()


def test_retained_status_reaches_the_servers_wildcard_and_a_killed_terminal_leaves_its_will(
    locked: LockedNats,
) -> None:
    will = (topics.status("T0001"), b"offline", True)
    t1 = locked.link("T0001", will=lambda: will)
    try:
        assert t1.wait_connected(10)
        assert t1.publish(topics.status("T0001"), b"online", retain=True)
        seen, on_seen = inbox()
        server = locked.link("server", subscriptions=[(topics.ALL_STATUS, 1)], on_message=on_seen)
        try:
            # subscribed after the publish: only the retained copy can bring it
            assert wait_until(lambda: (topics.status("T0001"), b"online") in seen, 30)
            t1.drop_connection()  # as a killed process: no DISCONNECT, the broker sends the will
            assert wait_until(lambda: (topics.status("T0001"), b"offline") in seen, 15)
        finally:
            server.stop()
    finally:
        t1.stop()


@pytest.mark.slow
def test_a_real_sale_is_applied_once_through_nats(tmp_path: Path) -> None:
    clock = FakeClock(ms_from_china("2026-11-26T11:45"))
    broker = NatsBroker().start()  # open (tests only): the harness's terminals enrol over HTTP
    try:
        with Cluster(tmp_path, broker=broker, clock=clock) as cluster:
            world = cluster.demo_world(6)
            term = cluster.add_terminal("C01")
            assert cluster.wait_synced(30)
            rng = random.Random(5)
            for diner in world.diners:
                clock.advance_ms(20_000)
                decision, _ = term.terminal.tap(TapRequest(diner.card_id))
                assert decision.approved, decision.reason
                decision, _ = term.terminal.tap(
                    TapRequest(diner.card_id, kind="shop", items=(("tissue", rng.randint(1, 3)),))
                )
            assert cluster.drain(60)
            audit = cluster.audit()
            assert audit.approved == audit.applied > 0 and audit.pending == 0
            assert audit.ledger_sum_fen == 0 and audit.violations == []
            conn = cluster.db()
            sales = conn.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0]
            assert sales == audit.applied
            conn.close()
    finally:
        broker.stop()


def test_the_server_rewrites_the_nats_users_and_reloads_nats_on_provision_and_revoke(
    locked: LockedNats,
) -> None:
    config = {
        **locked.app.config,  # type: ignore[attr-defined]
        "MQTT_NATS_AUTHORIZATION_FILE": str(locked.auth_file),
        "MQTT_PID_FILE": str(Path(locked.broker.data_dir) / "nats.pid"),
        "MQTT_RELOAD_COMMAND": "",
    }
    conn = open_db(locked.app.config["DATABASE"])  # type: ignore[attr-defined]
    try:
        with write_txn(conn):
            locked.creds["T0003"] = terminals.provision(conn, "C01", 0, "00" * 32, "T0003")
        assert broker_users.apply(conn, config)  # SIGHUP to the nats-server in the pid file
        newcomer = locked.link("T0003", subscriptions=[(topics.ack("T0003"), 1)])
        try:
            assert newcomer.wait_connected(15)  # known to NATS without a restart
        finally:
            newcomer.stop()
        with write_txn(conn):
            terminals.revoke(conn, "T0003", 1)
        assert broker_users.apply(conn, config)
        gone = locked.link("T0003")
        try:
            assert wait_until(lambda: gone.refusals > 0, 15)
            assert not gone.connected
        finally:
            gone.stop()
    finally:
        conn.close()
