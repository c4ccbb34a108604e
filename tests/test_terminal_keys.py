"""The terminal's side of a key rotation and of fleet health (issue 15): the keyring keeps a
rotated key durably and prefers it at the next start; offers that are not for this key are
ignored or noted; the status carries the health fields, and an older terminal's status
without them still decodes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from shared.clock import FakeClock, ms_from_china
from shared.protocol import ServerKey, Status, seal_server, topics
from shared.protocol.rekey import key_id, seal_key
from terminal.config import TerminalConfig
from terminal.credentials import Keyring
from terminal.store import Store
from terminal.sync import SyncAgent

OLD, NEW, OTHER = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34))


def _config(tmp_path: Path, key: ServerKey) -> tuple[TerminalConfig, Path]:
    data = {
        "terminal_id": "T0001",
        "canteen_id": "C01",
        "secret_hex": OLD.hex(),
        "server_public_key": key.public_hex,
        "broker_url": "mqtt://127.0.0.1:9",  # never started: messages are handed in directly
        "server_url": "http://127.0.0.1:9",
        "db_path": "t.sqlite",
        "reader": "stdin",
    }
    path = tmp_path / "t1.json"
    path.write_text(json.dumps(data))
    return TerminalConfig.load(path), path


def test_a_rotated_key_is_kept_in_the_database_and_the_config_file(tmp_path: Path) -> None:
    config, path = _config(tmp_path, ServerKey.generate())
    store = Store(config.db_path)
    ring = Keyring(config, store, str(path))
    ring.install(NEW)
    assert (ring.current, ring.previous) == (NEW, OLD)
    written = json.loads(path.read_text())
    assert written["secret_hex"] == NEW.hex() and written["reader"] == "stdin"  # the rest as it was
    assert written["db_path"] == "t.sqlite"  # relative paths stay relative
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the next start, even from an old copy of the configuration, uses the new key
    again = Keyring(config, store, None)
    assert (again.current, again.previous) == (NEW, OLD)
    assert again.broker_password(0) != again.broker_password(1)  # new first, then the old one
    store.close()


def test_a_key_recorded_for_another_terminal_is_ignored(tmp_path: Path) -> None:
    config, _ = _config(tmp_path, ServerKey.generate())
    store = Store(config.db_path)
    store.set_metas({"credentials": json.dumps({"terminal_id": "T0099", "secret_hex": NEW.hex()})})
    assert Keyring(config, store).current == OLD
    store.close()


def test_the_agent_takes_an_offer_for_its_key_only(tmp_path: Path) -> None:
    key = ServerKey.generate()
    config, path = _config(tmp_path, key)
    clock = FakeClock(ms_from_china("2026-01-06T15:00"))
    agent = SyncAgent(config, clock, config_path=str(path))
    try:
        for_another_key = seal_server("rekey", seal_key(OTHER, "T0001", NEW).to_body(), key, clock.now_ms())
        agent._on_message(topics.rekey("T0001"), for_another_key)
        assert agent.keys.current == OLD and agent.last_error is not None
        assert agent.last_error[0] == "rekey_unreadable"
        forged = seal_server(
            "rekey", seal_key(OLD, "T0001", NEW).to_body(), ServerKey.generate(), clock.now_ms()
        )
        agent._on_message(topics.rekey("T0001"), forged)  # not signed by our server
        assert agent.keys.current == OLD and agent.stats.refused_messages == 1
        agent._on_message(topics.rekey("T0001"), b"")  # a withdrawn offer: nothing to do
        offer = seal_server("rekey", seal_key(OLD, "T0001", NEW).to_body(), key, clock.now_ms())
        agent._on_message(topics.rekey("T0001"), offer)
        assert agent.keys.current == NEW and agent.rotations == 1
        agent._on_message(topics.rekey("T0001"), offer)  # the retained offer seen again
        assert agent.rotations == 1
        assert json.loads(path.read_text())["secret_hex"] == NEW.hex()
        status = agent.status()
        assert status.journal_bytes and status.disk_free_bytes and status.disk_total_bytes
        assert status.last_error == "rekey_unreadable" and status.last_error_ms == clock.now_ms()
        assert key_id(agent.keys.current) == key_id(NEW)
    finally:
        agent.store.close()


def test_status_health_fields_round_trip_and_older_statuses_still_decode() -> None:
    full = Status(
        state="online",
        pending=2,
        delta_version=7,
        clock_ms=1,
        oldest_unsent_ms=5,
        last_sync_ms=6,
        disk_free_bytes=10**9,
        disk_total_bytes=3 * 10**9,
        journal_bytes=4096,
        last_error="server_unreachable",
        last_error_ms=9,
    )
    assert Status.from_body(full.to_body()) == full
    old_form = {"state": "online", "pending": 0, "delta_version": 0, "clock_ms": 0, "software": ""}
    assert Status.from_body(old_form).disk_free_bytes is None
    assert "disk_free_bytes" not in Status(state="offline").to_body()  # unknown: not on the wire
