"""The sync agent's batch (:meth:`terminal.store.Store.begin_batch`), pinned to the general path.

Acks and deltas that arrive together are settled and applied in one transaction, their meta
values (the delta version, the sync time) written once at its end. Drawn runs of acks and
deltas (in order, repeated, with gaps, changing the rules) must leave the database and the
agent exactly as handling each message in its own transaction does; an error in one of them
rolls the whole batch back, and the agent reads back what it had taken as written.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clock import FakeClock, ms_from_china
from shared.errors import DomainError
from shared.protocol import Ack, ServerKey, seal_hmac, seal_server, topics
from shared.protocol.messages import Balance, Delta, SaleResult, decode_changes
from terminal import sync
from terminal.config import TerminalConfig
from terminal.store import Store
from terminal.sync import SyncAgent

SECRET = bytes(range(32))
KEY = ServerKey.generate()
TID = "T0001"
HOLDERS = ("H1", "H2")
_dirs = itertools.count()


def _agent(root: Path, clock: FakeClock, batched: bool) -> SyncAgent:
    where = root / f"a{next(_dirs)}"
    where.mkdir()
    data = {
        "terminal_id": TID,
        "canteen_id": "C01",
        "secret_hex": SECRET.hex(),
        "server_public_key": KEY.public_hex,
        "broker_url": "mqtt://127.0.0.1:9",  # never started: messages are handed in directly
        "server_url": "http://127.0.0.1:9",
        "db_path": "t.sqlite",
        "reader": "stdin",
    }
    (where / "t.json").write_text(json.dumps(data))
    config = TerminalConfig.load(where / "t.json")
    store = Store(config.db_path)
    changes: list[dict[str, Any]] = [
        {
            "kind": "holder",
            "holder_id": h,
            "unit_id": "U01",
            "subsidy_fen": 3000,
            "self_fen": 500,
            "blocked": False,
        }
        for h in HOLDERS
    ]
    changes += [{"kind": "card", "card_id": f"C{h}", "holder_id": h, "status": "active"} for h in HOLDERS]
    store.apply_changes(1, decode_changes(tuple(changes)))
    for i in range(6):
        store.record_sale(
            terminal_id=TID,
            canteen_id="C01",
            card_id=f"C{HOLDERS[i % 2]}",
            holder_id=HOLDERS[i % 2],
            amount_fen=300,
            subsidy_fen=300,
            self_fen=0,
            occurred_at_ms=clock.now_ms() - 1000 + i,
            meal_period="lunch",
            announced=True,
        )
    store.close()
    agent = SyncAgent(config, clock)
    if not batched:  # the general path: every ack and delta in a transaction of its own
        agent.store.begin_batch = lambda: None  # type: ignore[method-assign]
    return agent


def _uuids(agent: SyncAgent) -> dict[int, str]:
    return dict(agent.store.conn.execute("SELECT seq, uuid FROM journal").fetchall())


def _messages(drawn: list[tuple[Any, ...]], uuids: dict[int, str], now: int) -> list[tuple[str, bytes]]:
    out = []
    for i, item in enumerate(drawn):
        if item[0] == "ack":
            _, seqs, status, balance = item
            results = tuple(
                SaleResult(
                    TID,
                    seq,
                    uuids[seq],
                    status,
                    reason=None if status == "applied" else "card_lost",
                    holder_id=HOLDERS[seq % 2],
                    balance=None if balance is None else Balance(balance[0], 500, balance[1]),
                )
                for seq in sorted(seqs)
            )
            body = Ack(f"m{i}", results).to_body()
            out.append((topics.ack(TID), seal_hmac("ack", "server", body, SECRET, now, f"a{i}")))
        else:
            _, version, fen, settings_fen = item
            changes: list[dict[str, Any]] = [
                {
                    "kind": "holder",
                    "holder_id": h,
                    "unit_id": "U01",
                    "subsidy_fen": fen,
                    "self_fen": 500,
                    "blocked": fen % 3 == 0,
                }
                for h in HOLDERS
            ]
            if settings_fen is not None:
                changes.append({"kind": "settings", "config": {"risk": {"max_sale_fen": settings_fen}}})
            body = Delta(version, tuple(changes)).to_body()
            out.append((topics.DELTA, seal_server("delta", body, KEY, now, f"d{i}")))
    return out


def _state(agent: SyncAgent) -> list[Any]:
    conn = agent.store.conn
    tables = [
        [tuple(r) for r in conn.execute(sql)]
        for sql in (
            "SELECT seq, status, reason FROM journal ORDER BY seq",
            "SELECT seq FROM outbox ORDER BY seq",
            "SELECT * FROM holders ORDER BY holder_id",
            "SELECT * FROM cards ORDER BY card_id",
            "SELECT key, value FROM meta WHERE key IN ('delta_version', 'last_sync_ms', 'settings', "
            "'last_error', 'sync_fault') ORDER BY key",
        )
    ]
    down, record, stats = agent.downstream, agent.record, agent.stats
    memory = (down.version, down.need_catchup, record.last_sync_ms, record.stored_sync_ms, record.last_error)
    counts = (stats.acked, stats.rejected, stats.deltas_applied, stats.refused_messages)
    rules = agent.store.rules_source("C01")
    return [tables, memory, counts, rules, agent.store.rules_epoch() is not None, conn.in_transaction]


ack_st = st.tuples(
    st.just("ack"),
    st.sets(st.integers(1, 6), min_size=1, max_size=4),
    st.sampled_from(("applied", "applied", "rejected")),
    st.one_of(st.none(), st.tuples(st.integers(0, 5000), st.integers(1, 6))),
)
delta_st = st.tuples(
    st.just("delta"),
    st.integers(1, 6),  # the agent holds version 1: old ones, the next ones, gaps
    st.integers(0, 5000),
    st.one_of(st.none(), st.integers(100, 9000)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    cap=st.sampled_from((1, 2, 32)),
    drains=st.lists(st.lists(st.one_of(ack_st, delta_st), min_size=1, max_size=6), min_size=1, max_size=3),
)
def test_a_batch_of_acks_and_deltas_leaves_what_one_transaction_each_leaves(
    tmp_path: Path, drains: list[list[tuple[Any, ...]]], cap: int
) -> None:
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    batched, general = _agent(tmp_path, clock, True), _agent(tmp_path, clock, False)
    saved, sync.BATCH_MESSAGES = sync.BATCH_MESSAGES, cap  # a long run: several batches
    try:
        for n, drawn in enumerate(drains):
            clock.advance_ms(n % 2)  # the same ms as the last drain, or the next one
            for agent in (batched, general):
                for message in _messages(drawn, _uuids(agent), clock.now_ms()):
                    agent._inbox.append(("msg", message))
                agent._drain_inbox()
            assert _state(batched) == _state(general)
    finally:
        sync.BATCH_MESSAGES = saved
        batched.store.close()
        general.store.close()


def test_an_error_in_a_batch_rolls_all_of_it_back_and_the_agent_reads_back(tmp_path: Path) -> None:
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    agent = _agent(tmp_path, clock, True)
    try:
        before = _state(agent)
        drawn = [("ack", {1, 2}, "applied", (100, 2)), ("delta", 2, 700, None), ("delta", 3, 800, 5000)]
        real = agent.store.apply_changes

        def failing(version: int, *args: Any, **kwargs: Any) -> None:
            real(version, *args, **kwargs)
            if version == 3:
                raise DomainError("unknown_change_kind", "planted")

        agent.store.apply_changes = failing  # type: ignore[method-assign]
        agent.upstream.cursor = 6
        for message in _messages(drawn, _uuids(agent), clock.now_ms()):
            agent._inbox.append(("msg", message))
        with pytest.raises(DomainError):
            agent._drain_inbox()
        tables, memory = _state(agent)[:2]
        assert tables == before[0]  # the ack's settlement and the first delta rolled back too
        assert memory[0] == 1 and memory[3] == before[1][3]  # the version and sync time read back
        assert agent.upstream.cursor == 0  # the acked sales, still in the outbox, go again
        assert agent.store.rules_epoch() is None  # the rules are read from the database
        assert not agent.store.conn.in_transaction and not agent.store._batching
        agent.store.apply_changes = real  # type: ignore[method-assign]
        for message in _messages(drawn, _uuids(agent), clock.now_ms()):
            agent._inbox.append(("msg", message))
        agent._drain_inbox()  # the same messages again: now applied
        assert agent.downstream.version == agent.store.delta_version == 3
        assert agent.store.pending_count() == 4
    finally:
        agent.store.close()


def _own_status_outcome(agent: SyncAgent, payload: bytes) -> tuple[Any, ...]:
    agent._on_message(topics.status(TID), payload)
    return agent._own_status_seen, agent.stats.refused_messages, agent.identity_conflict


@pytest.mark.parametrize("rotations", [0, 1, 2])
@pytest.mark.parametrize("tampered", [False, True])
def test_reading_back_its_own_status_is_opening_it(tmp_path: Path, rotations: int, tampered: bool) -> None:
    """The status this process published, read back as the same bytes, is taken as its own
    without a second opening — as the opening finds it: signed with a key still held (a
    status signed two rotations ago is refused), and any other bytes are opened."""
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    fast, general = _agent(tmp_path, clock, True), _agent(tmp_path, clock, True)
    try:
        general.instance = fast.instance
        fast.send_status()
        payload = fast._sent_status[0]  # type: ignore[index]
        if tampered:
            payload = payload.replace(b'"pending":', b'"pending": ')  # the same status, other bytes
        for agent in (fast, general):
            for i in range(rotations):
                agent.keys.install(bytes(range(10 + i, 42 + i)))
        general._sent_status = None  # the general path: open it
        assert _own_status_outcome(fast, payload) == _own_status_outcome(general, payload)
        assert fast._own_status_seen == (rotations < 2)
    finally:
        fast.store.close()
        general.store.close()


def test_the_status_counts_the_outbox_and_dates_its_oldest_sale_in_one_read(tmp_path: Path) -> None:
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    agent = _agent(tmp_path, clock, True)
    try:
        store = agent.store
        for settled in (set(), {1, 2}, {1, 2, 3, 4, 5, 6}):
            store.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in settled])
            assert store.pending_and_oldest() == (store.pending_count(), store.oldest_pending_ms())
            status = agent.status()
            assert (status.pending, status.watermark_ms) == (store.pending_count(), agent.watermark_ms())
    finally:
        agent.store.close()
