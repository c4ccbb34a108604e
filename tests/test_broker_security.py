"""The broker as production runs it: a real Mosquitto with the locked configuration that
``canteen-server mosquitto-config`` renders, and the password and ACL files the server writes
from its terminals table (issue 11). No test here waits for something *not* to happen: each
negative is checked against a later message that must arrive (MQTT keeps one publisher's
order), or against the broker's own refusal."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.app import create_app
from server.cli import main as server_cli
from server.infra.db import open_db, write_txn
from server.registry import broker_users, terminals
from server.registry.units import add_canteen, add_unit
from server.service import ServerService
from shared.broker import MosquittoBroker, render_mosquitto_conf
from shared.clock import FakeClock, SystemClock, ms_from_china
from shared.protocol import ServerKey, seal_hmac, seal_server, topics
from simulator.waiting import wait_until
from terminal.cli import main as terminal_cli
from terminal.config import TerminalConfig
from terminal.sync import SyncAgent
from tests.broker_support import BrokerLogins, inbox, one_canteen_app

pytestmark = pytest.mark.skipif(not MosquittoBroker.available(), reason="needs the mosquitto binary")


@dataclass
class Locked(BrokerLogins):
    home: Path
    app: object
    files: broker_users.BrokerFiles
    broker: MosquittoBroker
    creds: dict[str, terminals.TerminalCredentials]

    def provision(self, terminal_id: str) -> terminals.TerminalCredentials:
        conn = open_db(self.app.config["DATABASE"])  # type: ignore[attr-defined]
        try:
            with write_txn(conn):
                c = terminals.provision(conn, "C01", 0, "00" * 32, terminal_id)
            broker_users.write_broker_files(conn, self.files)
        finally:
            conn.close()
        self.creds[terminal_id] = c
        return c


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Locked]:
    app, conn = one_canteen_app(tmp_path)
    files = broker_users.BrokerFiles.from_config(app.config)
    broker_users.write_broker_files(conn, files)
    conn.close()
    broker = MosquittoBroker(password_file=str(files.password_file), acl_file=str(files.acl_file))
    world = Locked(tmp_path, app, files, broker, {})
    world.provision("T0001")
    world.provision("T0002")
    broker.start()
    yield world
    broker.stop()


def test_the_rendered_configuration_is_locked() -> None:
    conf = render_mosquitto_conf(8883, "/var/lib/mosquitto", password_file="/p", acl_file="/a", listen="")
    assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf
    assert "password_file /p" in conf and "acl_file /a" in conf
    assert "use_username_as_clientid true" in conf
    assert "listener 8883\n" in conf
    tls = render_mosquitto_conf(
        8883, "/d", password_file="/p", acl_file="/a", cafile="c", certfile="s", keyfile="k"
    )
    assert "cafile c" in tls and "certfile s" in tls and "keyfile k" in tls
    with pytest.raises(ValueError):
        render_mosquitto_conf(1883, "/d")  # no way to render an open production broker by accident


def test_mosquitto_config_cli_renders_locked_and_writes_the_server_user_0600(tmp_path: Path) -> None:
    assert CliRunner().invoke(server_cli, ["--home", str(tmp_path), "init"]).exit_code == 0
    result = CliRunner().invoke(server_cli, ["--home", str(tmp_path), "mosquitto-config", "--port", "1884"])
    assert result.exit_code == 0, result.output
    assert "allow_anonymous false" in result.stdout and "use_username_as_clientid true" in result.stdout
    app = create_app({"HOME": str(tmp_path), "TESTING": True})
    files = broker_users.BrokerFiles.from_config(app.config)
    password = files.server_password_file.read_text().strip()
    assert stat.S_IMODE(os.stat(files.server_password_file).st_mode) == 0o600
    assert password not in result.output  # never printed
    assert files.password_file.read_text().startswith("server:$7$101$")
    assert "kill -HUP" in result.output  # how to reload (stderr, mixed in by the runner)


def test_an_anonymous_client_is_refused(locked: Locked) -> None:
    anon = locked.link(None, client_id="nobody")
    try:
        assert wait_until(lambda: anon.refusals > 0, 30)
        assert not anon.connected
    finally:
        anon.stop()
    wrong = locked.link("T0001", password="guessed")
    try:
        assert wait_until(lambda: wrong.refusals > 0, 30)
    finally:
        wrong.stop()


def test_a_terminal_cannot_read_another_terminals_acks_or_sales(locked: Locked) -> None:
    seen, on_snoop = inbox()
    heard, on_server = inbox()
    # Mosquitto grants the subscriptions and delivers only what the ACL lets T0001 read
    snoop = locked.link(
        "T0001",
        subscriptions=[(topics.ack("T0002"), 1), ("#", 1), (topics.ack("T0001"), 1)],
        on_message=on_snoop,
    )
    server = locked.link("server", subscriptions=[(topics.ALL_SALES, 1)], on_message=on_server)
    t2 = locked.link("T0002")
    try:
        assert snoop.wait_connected(10) and server.wait_connected(10) and t2.wait_connected(10)
        assert t2.publish(topics.sales("T0002"), b"T0002's sale")
        assert wait_until(lambda: heard, 30)  # the broker has routed it to every subscriber
        assert server.publish(topics.ack("T0002"), b"T0002's ack")
        assert server.publish(topics.ack("T0001"), b"canary")  # after both: T0001 may read this
        assert wait_until(lambda: (topics.ack("T0001"), b"canary") in seen, 30)
        assert [p for _, p in seen] == [b"canary"]
    finally:
        for link in (t2, server, snoop):
            link.stop()


@pytest.mark.parametrize(
    "topic", [topics.sales("T0002"), topics.status("T0002"), topics.DELTA, topics.SERVER, topics.ack("T0001")]
)
def test_a_terminal_cannot_publish_on_another_terminals_topics(locked: Locked, topic: str) -> None:
    got, on_message = inbox()
    watch = [(topics.ALL_SALES, 1), (topics.ALL_STATUS, 1), (topics.SERVER, 1), (topics.DELTA, 1)]
    server = locked.link("server", subscriptions=[*watch, (topics.ack("T0001"), 1)], on_message=on_message)
    t1 = locked.link("T0001")
    try:
        assert server.wait_connected(10) and t1.wait_connected(10)
        assert t1.publish(topic, b"forged")
        # Mosquitto drops the message and the connection of a client publishing where it may not
        assert wait_until(lambda: t1.disconnects > 0, 30)
        assert wait_until(lambda: t1.publish(topics.sales("T0001"), b"canary"), 30)  # reconnected
        assert wait_until(lambda: (topics.sales("T0001"), b"canary") in got, 30)
        assert b"forged" not in [p for _, p in got]
    finally:
        t1.stop()
        server.stop()


def test_anothers_client_id_cannot_knock_a_terminal_off(locked: Locked) -> None:
    got, on_message = inbox()
    victim = locked.link("T0002", subscriptions=[(topics.ack("T0002"), 1)], on_message=on_message)
    server = locked.link("server")
    try:
        assert victim.wait_connected(10) and server.wait_connected(10)
        # T0001's credentials, T0002's client id: the broker uses the user name as client id
        thief = locked.link("T0001", client_id="T0002")
        try:
            assert thief.wait_connected(10)
            assert server.publish(topics.ack("T0002"), b"after the thief connected")
            assert wait_until(lambda: got, 30)
            assert victim.disconnects == 0 and victim.connects == 1  # never knocked off
        finally:
            thief.stop()
    finally:
        victim.stop()
        server.stop()


def test_revoking_a_terminal_removes_it_from_the_broker_after_sighup(locked: Locked) -> None:
    locked.provision("T0003")
    locked.broker.reload()  # SIGHUP: the new user exists from now on
    t3 = locked.link("T0003")
    try:
        assert wait_until(lambda: t3.connected, 15)
        conn = open_db(locked.app.config["DATABASE"])  # type: ignore[attr-defined]
        with write_txn(conn):
            terminals.revoke(conn, "T0003", 0)
        broker_users.write_broker_files(conn, locked.files)
        conn.close()
        assert "T0003" not in locked.files.password_file.read_text()
        assert "T0003" not in locked.files.acl_file.read_text()
        locked.broker.reload()
        assert wait_until(lambda: t3.refusals > 0, 15)  # dropped, and refused on reconnecting
    finally:
        t3.stop()


def test_revoke_terminal_cli(tmp_path: Path) -> None:
    app = create_app({"HOME": str(tmp_path), "TESTING": True})
    conn = open_db(app.config["DATABASE"])
    with write_txn(conn):
        add_unit(conn, "U01", "市财政局")
        add_canteen(conn, "C01", "一食堂", "U01", now_ms=0)
    conn.close()
    run = CliRunner().invoke
    out = run(
        server_cli, ["--home", str(tmp_path), "provision-terminal", "C01", "--id", "T0009", "--with-secret"]
    )
    assert out.exit_code == 0, out.output
    files = broker_users.BrokerFiles.from_config(app.config)
    assert "T0009:$7$" in files.password_file.read_text()
    assert "user T0009" in files.acl_file.read_text()
    out = run(server_cli, ["--home", str(tmp_path), "revoke-terminal", "T0009"])
    assert out.exit_code == 0 and "T0009" not in files.password_file.read_text()
    again = run(server_cli, ["--home", str(tmp_path), "revoke-terminal", "T0009"])
    assert again.exit_code == 2 and "terminal_revoked" in again.output
    bad = run(server_cli, ["--home", str(tmp_path), "provision-terminal", "C01", "--id", "server"])
    assert bad.exit_code == 2


# --- presence freshness ---------------------------------------------------------------------


def _agent(tmp_path: Path, clock: FakeClock, key: ServerKey, silence_s: float = 30.0) -> SyncAgent:
    config = TerminalConfig(
        terminal_id="T0001",
        canteen_id="C01",
        secret_hex="11" * 32,
        server_public_key=key.public_hex,
        broker_url="mqtt://127.0.0.1:9",  # never started: messages are handed in directly
        server_url="http://127.0.0.1:9",
        db_path=str(tmp_path / "t.sqlite"),
        server_silence_s=silence_s,
    )
    agent = SyncAgent(config, clock)
    agent.online = True
    return agent


def _presence(key: ServerKey, boot: str, seq: int, at_ms: int, state: str = "online") -> bytes:
    return seal_server(
        "server_status", {"state": state, "heartbeat_s": 10, "boot": boot, "seq": seq}, key, at_ms
    )


def test_a_replayed_old_online_presence_is_ignored(tmp_path: Path) -> None:
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    key = ServerKey.generate()
    agent = _agent(tmp_path, clock, key)
    try:
        captured = _presence(key, "boot1", 5, clock.now_ms())
        agent._on_message(topics.SERVER, captured)
        assert agent.server_present
        agent._on_message(topics.SERVER, _presence(key, "boot1", 6, clock.now_ms(), "offline"))  # the will
        assert not agent.server_present
        clock.advance_ms(31_000)  # the server is dead; someone replays the captured "online"
        agent._on_message(topics.SERVER, captured)
        assert not agent.server_present
        # a lower sequence of the same boot, even freshly dated, is a replay too
        agent._on_message(topics.SERVER, _presence(key, "boot1", 7, clock.now_ms()))
        assert agent.server_present
        agent._on_message(topics.SERVER, _presence(key, "boot1", 8, clock.now_ms(), "offline"))
        agent._on_message(topics.SERVER, _presence(key, "boot1", 4, clock.now_ms()))
        assert not agent.server_present
        # a presence message without boot and sequence (the old form) is refused outright
        refused = agent.stats.refused_messages
        old_form = seal_server("server_status", {"state": "online", "heartbeat_s": 10}, key, clock.now_ms())
        agent._on_message(topics.SERVER, old_form)
        assert agent.stats.refused_messages == refused + 1 and not agent.server_present
        # a new server boot, fresh: accepted
        agent._on_message(topics.SERVER, _presence(key, "boot2", 1, clock.now_ms()))
        assert agent.server_present
    finally:
        agent.store.close()


def test_the_presence_age_is_judged_by_the_corrected_clock(tmp_path: Path) -> None:
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    key = ServerKey.generate()
    agent = _agent(tmp_path, clock, key)
    try:
        agent.clock_offset_ms = -3_600_000  # this terminal's clock runs an hour ahead of the server
        agent._on_message(topics.SERVER, _presence(key, "b", 1, clock.now_ms() - 3_600_000))
        assert agent.server_present
    finally:
        agent.store.close()


# --- two processes, one terminal identity ---------------------------------------------------


def test_two_processes_with_one_terminal_identity_are_detected(locked: Locked, tmp_path: Path) -> None:
    c = locked.creds["T0001"]
    service = ServerService(locked.broker.url, app=locked.app, clock=SystemClock()).start()  # type: ignore[arg-type]
    agents: list[SyncAgent] = []
    try:
        assert service.link is not None and service.link.connected  # as the broker user "server"
        base = {
            **c.to_json(),
            "server_public_key": locked.app.extensions["canteen_server_key"].public_hex,  # type: ignore[attr-defined]
            "broker_url": locked.broker.url,
            "server_url": service.base_url,
            "heartbeat_s": 0.5,
        }
        configs = [
            TerminalConfig.from_dict({**base, "db_path": str(tmp_path / f"pi{i}.sqlite")}) for i in (1, 2)
        ]
        (tmp_path / "pi1.json").write_text(json.dumps(configs[0].to_dict()))
        agents = [SyncAgent(cfg, SystemClock()).start() for cfg in configs]
        assert wait_until(lambda: all(a.identity_conflict for a in agents), 60)
        assert agents[0].identity_conflict == agents[1].instance
        conn = open_db(locked.app.config["DATABASE"])  # type: ignore[attr-defined]
        try:
            assert wait_until(lambda: "T0001" in terminals.duplicates(conn), 30)
            assert set(terminals.duplicates(conn)["T0001"]["instances"]) >= {a.instance for a in agents}
        finally:
            conn.close()
        report = CliRunner().invoke(server_cli, ["--home", str(locked.home), "report", "terminals", "--json"])
        assert report.exit_code == 0, report.output
        row = next(t for t in json.loads(report.stdout)["terminals"] if t["terminal_id"] == "T0001")
        assert row["duplicate_identity"] is not None
        status = CliRunner().invoke(terminal_cli, ["status", "--config", str(tmp_path / "pi1.json")])
        assert status.exit_code == 0, status.output
        assert "终端身份重复，请联系管理员" in status.output
    finally:
        for a in agents:
            a.stop()
        service.stop()


def test_a_restarted_terminal_is_not_taken_for_a_duplicate(tmp_path: Path) -> None:
    """The previous run's retained status carries another instance id: not a duplicate, since
    this process had not yet seen its own status on the topic."""
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    key = ServerKey.generate()
    agent = _agent(tmp_path, clock, key)
    secret = agent.config.secret
    try:

        def status(instance: str) -> bytes:
            body = {"state": "online", "pending": 0, "delta_version": 0, "clock_ms": 0, "software": ""}
            return seal_hmac("status", "T0001", {**body, "instance": instance}, secret, clock.now_ms())

        agent._on_message(topics.status("T0001"), status("previous-run"))
        agent._on_message(topics.status("T0001"), status(agent.instance))
        assert agent.identity_conflict is None
        agent._on_message(topics.status("T0001"), status("someone-else"))
        assert agent.identity_conflict == "someone-else"
    finally:
        agent.store.close()


def test_the_server_tells_a_restart_from_a_duplicate(tmp_path: Path) -> None:
    app = create_app({"HOME": str(tmp_path), "TESTING": True})
    conn = open_db(app.config["DATABASE"])
    with write_txn(conn):
        assert not terminals.note_instance(conn, "T1", "a", 1000)
        assert not terminals.note_instance(conn, "T1", "a", 2000)
        assert not terminals.note_instance(conn, "T1", "b", 3000)  # a restart: a new instance
        assert not terminals.note_instance(conn, "T1", "b", 4000)
        assert terminals.note_instance(conn, "T1", "a", 5000)  # the old one is back: two processes
    assert "T1" in terminals.duplicates(conn)
    conn.close()
