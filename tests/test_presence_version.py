"""The server's presence saying its newest delta version (``PRESENCE_DELTA_VERSION``).

* Wire: the field is optional both ways — a body without it is the old body, byte for byte,
  and decodes as "not said"; a body with it is refused by the old decoder, which is why a
  server sends it only when configured to.
* The beacon reads the version from its own connection at each heartbeat, says it on
  ``online`` only, and says nothing without a connection.
* The terminal acts only on a version ahead of its own, and only once it stayed ahead for
  ``HEAD_GRACE_S`` (the deltas in flight arrive first); never on one at or below its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.downstream.presence import PresenceBeacon
from server.infra.db import open_db
from shared.clock import FakeClock
from shared.protocol import ProtocolError, ServerKey, ServerStatus, ServerVerifier, open_envelope, topics
from shared.protocol.codec import only_keys
from terminal import sync_downstream
from terminal.sync import SyncAgent
from tests.terminal_support import offline_config

OLD_KEYS = frozenset({"state", "heartbeat_s", "boot", "seq"})  # what a terminal before the field allows


# --- wire --------------------------------------------------------------------------------


@given(st.integers(0, 2**53), st.sampled_from(["online", "offline"]), st.integers(0, 10**9))
def test_a_presence_with_a_version_round_trips(version: int, state: str, seq: int) -> None:
    status = ServerStatus(state, 10, "b00t", seq, version)
    body = orjson.loads(orjson.dumps(status.to_body()))
    assert body["delta_version"] == version
    assert ServerStatus.from_body(body) == status


def test_without_a_version_the_body_is_the_old_one_and_decodes_as_not_said() -> None:
    status = ServerStatus("online", 10, "b00t", 7)
    assert status.delta_version is None
    assert status.to_body() == {"state": "online", "heartbeat_s": 10, "boot": "b00t", "seq": 7}
    old_body = {"state": "online", "heartbeat_s": 10, "boot": "b00t", "seq": 7}  # an old server's
    assert ServerStatus.from_body(old_body) == status
    assert ServerStatus.from_body(old_body | {"delta_version": None}).delta_version is None


def test_an_old_terminal_would_refuse_a_body_with_the_version() -> None:
    """Why the field is left out unless the server is configured to say it."""
    only_keys(ServerStatus("online", 10, "b", 1).to_body(), OLD_KEYS, "body")  # passes
    with pytest.raises(ProtocolError, match="unknown field"):
        only_keys(ServerStatus("online", 10, "b", 1, 5).to_body(), OLD_KEYS, "body")


@pytest.mark.parametrize("bad", [-1, "5", 1.5, True, [5]])
def test_a_version_that_is_not_a_count_is_refused(bad: object) -> None:
    body = {"state": "online", "heartbeat_s": 10, "boot": "b", "seq": 1, "delta_version": bad}
    with pytest.raises(ProtocolError):
        ServerStatus.from_body(body)


# --- the beacon --------------------------------------------------------------------------


_KEY = ServerKey.generate()
_VERIFY = ServerVerifier(_KEY.public_hex)


def _said(payload: bytes) -> ServerStatus:
    return ServerStatus.from_body(open_envelope(payload, server=_VERIFY, expect_type="server_status").body)


class _Link:
    connected = True

    def __init__(self) -> None:
        self.sent: list[ServerStatus] = []

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        assert topic == topics.SERVER and retain
        self.sent.append(_said(payload))
        return True


def _add_delta(conn, version: int) -> None:  # noqa: ANN001
    conn.execute("INSERT INTO deltas (version, at_ms, changes_json) VALUES (?, 0, '[]')", (version,))


def test_the_beacon_says_the_version_read_at_each_heartbeat(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "s.sqlite")
    beacon = PresenceBeacon(_KEY, FakeClock(0), 10, conn=open_db(tmp_path / "s.sqlite"))
    link = _Link()
    beacon.attach(link)  # type: ignore[arg-type]
    beacon.beat()
    _add_delta(conn, 1)
    _add_delta(conn, 2)
    beacon.on_state(True)  # a connect: the version of the last heartbeat, no query of its own
    beacon.beat()
    assert [s.delta_version for s in link.sent] == [0, 0, 2]
    offline = _said(beacon.will()[1])
    assert offline.state == "offline" and offline.delta_version is None  # the will says none
    conn.close()


def test_without_a_connection_the_beacon_says_no_version() -> None:
    beacon = PresenceBeacon(_KEY, FakeClock(0), 10)
    link = _Link()
    beacon.attach(link)  # type: ignore[arg-type]
    beacon.beat()
    beacon.on_state(True)
    assert [s.delta_version for s in link.sent] == [None, None]


def test_a_failed_read_says_no_version_rather_than_an_old_one(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "s.sqlite")
    beacon = PresenceBeacon(_KEY, FakeClock(0), 10, conn=conn)
    link = _Link()
    beacon.attach(link)  # type: ignore[arg-type]
    beacon.beat()
    conn.close()  # reading now raises sqlite3.ProgrammingError (an sqlite3.Error)
    beacon.beat()
    assert [s.delta_version for s in link.sent] == [0, None]


# --- the terminal ------------------------------------------------------------------------


class _Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@contextmanager
def _agent(tmp_path: Path) -> Iterator[tuple[SyncAgent, _Mono]]:
    """An unconnected agent at delta version 5 on a hand-driven monotonic clock; its store
    closed after."""
    config = offline_config(tmp_path)
    mono = _Mono()
    agent = SyncAgent(config, FakeClock(0), monotonic=mono)  # the link is made, not started
    agent.downstream.version, agent.downstream.need_catchup = 5, False
    try:
        yield agent, mono
    finally:
        agent.store.close()


def test_a_version_ahead_for_the_grace_starts_the_catch_up(tmp_path: Path) -> None:
    with _agent(tmp_path) as (agent, mono):
        down = agent.downstream
        assert down.on_server_head(6) is False and not down.need_catchup  # in flight, perhaps
        mono.t += sync_downstream.HEAD_GRACE_S / 2
        assert down.on_server_head(6) is False and not down.need_catchup  # another process's, soon after
        mono.t += sync_downstream.HEAD_GRACE_S / 2
        assert down.on_server_head(7) is False
        assert down.need_catchup and down.head_catchups == 1  # 6 never came: lost


def test_a_delta_that_comes_within_the_grace_starts_nothing(tmp_path: Path) -> None:
    with _agent(tmp_path) as (agent, mono):
        down = agent.downstream
        assert down.on_server_head(6) is False
        down.version = 6  # the delta arrived (on_delta sets it)
        mono.t += 10 * sync_downstream.HEAD_GRACE_S
        assert down.on_server_head(6) is True
        assert down.on_server_head(8) is False  # newer: a grace of its own
        assert not down.need_catchup and down.head_catchups == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 100)), max_size=30))
def test_a_version_at_or_below_ours_never_starts_a_catch_up(tmp_path_factory, heads) -> None:  # noqa: ANN001
    """Another server process's presence, read a heartbeat before ours: never backwards."""
    with _agent(tmp_path_factory.mktemp("t")) as (agent, mono):
        down = agent.downstream
        for head, dt in heads:
            mono.t += dt
            assert down.on_server_head(head) is True
        assert not down.need_catchup and down.version == 5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.floats(0, 5)), max_size=30))
def test_a_catch_up_starts_exactly_when_a_version_stayed_ahead_for_the_grace(tmp_path_factory, heads) -> None:  # noqa: ANN001
    """The rule, by a plain model: with our version fixed, the first version heard ahead
    starts a clock; a later presence ahead at least HEAD_GRACE_S after it starts the catch-up."""
    with _agent(tmp_path_factory.mktemp("t")) as (agent, mono):
        down = agent.downstream
        first_ahead: float | None = None
        expect = False
        for head, dt in heads:
            mono.t += dt
            if head <= 5:
                first_ahead = None
            elif first_ahead is None:
                first_ahead = mono.t
            elif mono.t - first_ahead >= sync_downstream.HEAD_GRACE_S:
                expect = True
            down.on_server_head(head)
            assert down.need_catchup == expect
            if expect:
                break


def _presence(agent: SyncAgent, version: int | None, seq: int) -> None:
    agent.presence.on_presence(ServerStatus("online", 10, "b00t", seq, version), agent.clock.now_ms())


def test_a_presence_ahead_of_the_cache_does_not_mark_it_synced(tmp_path: Path) -> None:
    with _agent(tmp_path) as (agent, mono):
        agent.online = True
        agent.presence.heard = mono.t
        agent.clock.advance_ms(1000)  # type: ignore[attr-defined]
        _presence(agent, 6, 1)
        assert agent.record.last_sync_ms is None  # the server has a delta we do not
        _presence(agent, 5, 2)
        assert agent.record.last_sync_ms == agent.clock.now_ms()  # we hold its newest
        agent.clock.advance_ms(1000)  # type: ignore[attr-defined]
        _presence(agent, None, 3)  # a server that says none: as before, synced
        assert agent.record.last_sync_ms == agent.clock.now_ms()
        mono.t += sync_downstream.HEAD_GRACE_S
        _presence(agent, 7, 4)
        _presence(agent, 7, 5)
        mono.t += sync_downstream.HEAD_GRACE_S
        _presence(agent, 7, 6)
        assert agent.downstream.need_catchup and not agent.in_sync  # catching up over HTTP
