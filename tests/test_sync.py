"""The sync agent through a real broker and a real server: acks settle the outbox, a missed
delta is caught up over HTTP, the status is retained (and says "offline" when the terminal
vanishes), the watermark and the clock offset reach the server."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import pytest

from server.books import ledger
from server.downstream.deltas import record_delta
from server.infra.db import write_txn
from shared.clock import FakeClock, ms_from_china
from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import Status, topics
from simulator.harness.cluster import Cluster
from simulator.harness.world import World
from simulator.waiting import wait_until
from terminal.agent import OFFLINE_BANNER, Terminal
from terminal.authorize import TapRequest

pytestmark = pytest.mark.broker
START = "2026-01-06T12:00"


class SkewedClock:
    """A terminal clock ``offset_ms`` away from the server's."""

    def __init__(self, base: FakeClock, offset_ms: int) -> None:
        self.base, self.offset_ms = base, offset_ms

    def now_ms(self) -> int:
        return self.base.now_ms() + self.offset_ms


@contextlib.contextmanager
def _cluster(broker, tmp_path, clock: FakeClock) -> Iterator[tuple[Cluster, World]]:  # noqa: ANN001
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        world = cluster.demo_world(6)
        yield cluster, world


def _retained_status(broker, terminal_id: str) -> Status:  # noqa: ANN001
    got: list[bytes] = []
    done = threading.Event()

    def on_message(topic: str, payload: bytes) -> None:
        got.append(payload)
        done.set()

    link = MqttLink(
        f"peek-{terminal_id}",
        BrokerAddress.parse(broker.url),
        subscriptions=[(topics.status(terminal_id), 1)],
        on_message=on_message,
    ).start()
    try:
        assert done.wait(30), "no retained status"
    finally:
        link.stop()
    return Status.from_body(json.loads(got[-1])["body"])


def _assert_agent_knows_the_stored_delta_version(terminal: Terminal) -> None:
    """The sync agent keeps the cache's delta version in hand (it alone applies deltas):
    after a snapshot, live deltas or a catch-up it is what the database holds, read by the
    terminal's own connection."""
    stored = terminal.store.delta_version
    assert stored > 0 and terminal.sync.status().delta_version == stored


def test_sales_leave_the_outbox_only_on_the_servers_ack(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china(START))
    with _cluster(broker, tmp_path, clock) as (cluster, world):
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        assert t.terminal.sync.stats.snapshots == 1  # a fresh terminal starts from a snapshot
        _assert_agent_knows_the_stored_delta_version(t.terminal)
        t.mqtt_proxy.oneway()  # sales reach the server, acks do not come back
        for d in world.diners:
            assert t.terminal.tap(TapRequest(d.card_id))[0].approved
        conn = cluster.db()
        assert wait_until(
            lambda: conn.execute("SELECT count(*) FROM sales").fetchone()[0] == len(world.diners), 30
        )
        assert t.terminal.store.pending_count() == len(world.diners)  # applied, but not acknowledged
        t.heal()
        assert cluster.drain(30)
        audit = cluster.audit()
        assert (
            audit.mismatch_details == []
            and audit.applied == len(world.diners)
            and audit.duplicates_ignored > 0
        )
        # the balances came back with the acks: the cache now shows them
        holder = world.diners[0].holder_id
        server_sub = ledger.balance(conn, ledger.subsidy_purse(holder, 2026))
        conn.close()
        card = t.terminal.store.card_state(world.diners[0].card_id)
        assert card is not None and card.unconfirmed_fen == 0
        assert card.subsidy_fen == server_sub


def test_later_deltas_move_the_agents_delta_version_with_the_stored_one(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china(START))
    with _cluster(broker, tmp_path, clock) as (cluster, _world):
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        before = t.terminal.store.delta_version
        conn = cluster.db()
        for fen in (7000, 8000, 9000):
            with write_txn(conn):
                change = {"kind": "settings", "config": {"risk": {"max_sale_fen": fen}}}
                record_delta(conn, [change], clock.now_ms())
        conn.close()
        assert wait_until(lambda: t.terminal.rules()[1].max_sale_fen == 9000, 30)
        assert t.terminal.store.delta_version >= before + 3
        _assert_agent_knows_the_stored_delta_version(t.terminal)


def test_a_change_missed_while_offline_is_caught_up_before_the_next_online_sale(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china(START))
    with _cluster(broker, tmp_path, clock) as (cluster, world):
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        t.cut()
        assert wait_until(lambda: not t.terminal.sync.online, 30)
        # the banner follows within the sync agent's step (it reports the link after the flag)
        assert wait_until(lambda: OFFLINE_BANNER in t.terminal.display.last.lines, 30)  # type: ignore[union-attr]
        lost = world.diners[1].card_id
        conn = cluster.db()
        with write_txn(conn):  # the card is reported lost while the terminal is away
            conn.execute("UPDATE cards SET status = 'lost' WHERE card_id = ?", (lost,))
            record_delta(
                conn,
                [{"kind": "card", "card_id": lost, "holder_id": world.diners[1].holder_id, "status": "lost"}],
                clock.now_ms(),
            )
        with write_txn(conn):  # and something else happens after it: the retained delta is newer
            record_delta(
                conn, [{"kind": "settings", "config": {"risk": {"max_sale_fen": 9000}}}], clock.now_ms()
            )
        conn.close()
        t.heal()
        assert cluster.wait_synced(20)
        # in sync, the agent tells the display at the end of its step: the diner is told
        # before the next tap (a slow machine showed the gap between the two)
        assert wait_until(lambda: t.terminal.display.last.lines[0] == "网络已恢复", 30)  # type: ignore[union-attr]
        assert t.terminal.sync.stats.catchups > 0
        _assert_agent_knows_the_stored_delta_version(t.terminal)
        assert t.terminal.store.card_state(lost).card_status == "lost"  # type: ignore[union-attr]
        assert t.terminal.tap(TapRequest(lost))[0].reason == "card_blocked"
        assert t.terminal.rules()[1].max_sale_fen == 9000
        assert t.terminal.display.screens[-2].lines[0] == "网络已恢复"  # type: ignore[attr-defined]


def test_the_status_is_retained_and_the_will_says_offline(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china(START))
    with _cluster(broker, tmp_path, clock) as (cluster, world):
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        t.mqtt_proxy.oneway()
        clock.advance_ms(1000)
        _, sale = t.terminal.tap(TapRequest(world.diners[0].card_id))
        clock.advance_ms(1000)
        t.mqtt_proxy.heal()
        assert cluster.drain(30)
        assert wait_until(lambda: _retained_status(broker, t.id).pending == 0, 30)
        status = _retained_status(broker, t.id)
        assert (
            status.state == "online"
            and status.watermark_ms is not None
            and status.watermark_ms >= sale.occurred_at_ms
        )  # type: ignore[union-attr]
        conn = cluster.db()
        assert wait_until(
            lambda: (
                (conn.execute("SELECT watermark_ms FROM terminals WHERE id = ?", (t.id,)).fetchone()[0] or 0)
                > sale.occurred_at_ms
            ),
            10,
        )  # type: ignore[union-attr]
        conn.close()
        t.cut()  # the terminal vanishes without a goodbye: the broker publishes its will
        assert wait_until(lambda: _retained_status(broker, t.id).state == "offline", 30)


def test_the_watermark_never_passes_an_unsent_sale(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china(START))
    with _cluster(broker, tmp_path, clock) as (cluster, world):
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        t.cut()
        assert wait_until(lambda: not t.terminal.sync.online, 30)
        clock.advance_ms(5000)
        _, sale = t.terminal.tap(TapRequest(world.diners[0].card_id))
        clock.advance_ms(60_000)
        assert t.terminal.sync.watermark_ms() == sale.occurred_at_ms  # type: ignore[union-attr]
        assert t.terminal.sync.status().watermark_ms == sale.occurred_at_ms  # type: ignore[union-attr]


def test_a_terminal_whose_clock_is_far_off_refuses_offline_sales(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china(START))
    with _cluster(broker, tmp_path, clock) as (cluster, world):
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        t.terminal.sync.clock = t.terminal.clock = SkewedClock(clock, -20 * 60_000)  # type: ignore[assignment]
        t.terminal.sync.server_clock.next_probe = 0.0  # measure now
        assert wait_until(
            lambda: (
                t.terminal.sync.clock_offset_ms is not None
                and abs(t.terminal.sync.clock_offset_ms - 20 * 60_000) < 5000
            ),
            10,
        )
        # online the server's time is known: the sale is dated by it (12:00, not 11:40)
        _, sale = t.terminal.tap(TapRequest(world.diners[0].card_id))
        assert sale is not None and abs(sale.occurred_at_ms - clock.now_ms()) < 5000
        t.cut()
        assert wait_until(lambda: not t.terminal.sync.online, 30)
        decision, sale = t.terminal.tap(TapRequest(world.diners[1].card_id, kind="shop", amount_fen=100))
        assert sale is None and decision.reason == "clock_skew"
