"""The terminal agent without a network: journal before "paid", announce before send,
recovery after a power cut, operator cards, the loud offline display, clock dating."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware.display import MemoryDisplay, Screen
from shared.clock import FakeClock, ms_from_china
from shared.protocol.messages import decode_changes
from shared.sqlite_txn import write_txn
from terminal.agent import OFFLINE_BANNER, Terminal
from terminal.authorize import TapRequest
from terminal.rules import HOUR_MS
from terminal.store import Store
from tests.terminal_support import JournalCheckingDisplay, journal_sale, offline_config

NOON = ms_from_china("2026-01-06T12:00")
CANTEEN = {
    "unit_id": "U01",
    "meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200, "visitor_price_fen": 1500}},
    "items": {"tissue": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400}},
    "operator_cards": ["OP1"],
}


def changes(canteen: dict | None = None) -> tuple[dict, ...]:
    return (
        {"kind": "settings", "config": {}},
        {"kind": "canteen", "canteen_id": "C01", "config": canteen or CANTEEN},
        {
            "kind": "holder",
            "holder_id": "H1",
            "unit_id": "U01",
            "subsidy_fen": 5000,
            "self_fen": 0,
            "blocked": False,
        },
        {
            "kind": "holder",
            "holder_id": "H2",
            "unit_id": "U02",
            "subsidy_fen": 5000,
            "self_fen": 0,
            "blocked": False,
        },
        {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"},
        {"kind": "card", "card_id": "C2", "holder_id": "H2", "status": "active"},
        {"kind": "card", "card_id": "OP1", "holder_id": "H1", "status": "active"},
    )


def make_terminal(
    tmp_path: Path, clock: FakeClock, display: object | None = None, online: bool = True
) -> Terminal:
    config = offline_config(tmp_path, canteen_id="C01", server_public_key="00" * 32)
    term = Terminal(config, clock, display=display or MemoryDisplay(), on_event=events.append)  # type: ignore[arg-type]
    if term.store.delta_version == 0:
        term.store.apply_changes(1, decode_changes(changes()))
    set_online(term, online, clock)
    return term


def set_online(term: Terminal, online: bool, clock: FakeClock) -> None:
    """What the sync agent would know (no broker needed for these rules)."""
    term.sync.assume(online)
    if not online:
        term.sync.offline_since_ms = clock.now_ms()
        term.sync.last_sync_ms = clock.now_ms()


events: list[dict] = []


@pytest.fixture(autouse=True)
def _clear_events() -> None:
    events.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


def test_a_sale_is_on_disk_before_the_diner_is_told(tmp_path: Path, clock: FakeClock) -> None:
    display = JournalCheckingDisplay(
        str(tmp_path / "t.sqlite"), "journal", lambda screen: screen.tone == "ok"
    )  # "支付成功": the sale seen by another connection
    term = make_terminal(tmp_path, clock, display)
    decision, sale = term.tap(TapRequest("C1"))
    assert decision.approved and sale is not None
    assert display.journaled_when_shown == [1]
    assert events[-1]["event"] == "approved" and events[-1]["uuid"] == sale.uuid


def test_a_sale_is_released_for_upload_only_after_it_was_announced(tmp_path: Path, clock: FakeClock) -> None:
    released_when_shown: list[int] = []
    term: Terminal

    class Peek(MemoryDisplay):
        def show(self, screen: Screen) -> None:
            if screen.tone == "ok":
                released_when_shown.append(len(term.store.outbox_after(0, 10)))
            super().show(screen)

    term = make_terminal(tmp_path, clock, Peek())
    term.tap(TapRequest("C1"))
    assert released_when_shown == [0]
    assert len(term.store.outbox_after(0, 10)) == 1


def test_a_sale_cut_off_before_its_beep_is_announced_at_the_next_start(
    tmp_path: Path, clock: FakeClock
) -> None:
    term = make_terminal(tmp_path, clock)
    term.tap(TapRequest("C1", kind="shop", amount_fen=300))
    # the power goes after the commit of the next sale, before the beep
    lost = journal_sale(term.store, 700, clock.now_ms(), kind="shop")
    later = journal_sale(term.store, 100, clock.now_ms(), kind="shop", announced=True)
    assert [seq for seq, _ in term.store.outbox_after(0, 10)] == [1]  # nothing after the unannounced one
    term.store.close()

    events.clear()
    again = make_terminal(tmp_path, clock)
    assert again.recover() == 1
    assert [e["uuid"] for e in events if e["event"] == "recovered"] == [lost.uuid]
    assert "断电前最后一笔交易已成功" in again.display.last.lines[0]  # type: ignore[union-attr]
    assert [seq for seq, _ in again.store.outbox_after(0, 10)] == [1, lost.seq, later.seq]
    assert again.recover() == 0


def test_an_operator_card_shows_the_days_totals_and_charges_nothing(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock)
    term.tap(TapRequest("C1"))
    term.tap(TapRequest("C2"))
    decision, sale = term.tap(TapRequest("OP1"))
    assert sale is None and decision.reason == "operator_card"
    lines = term.display.last.lines  # type: ignore[union-attr]
    assert "合计 2笔 ¥27.00" in lines and "午餐2" in lines[2]
    assert term.store.conn.execute("SELECT count(*) FROM declines").fetchone()[0] == 0
    assert events[-1]["event"] == "operator" and events[-1]["totals"]["visitors"]["count"] == 1


def test_the_second_lunch_on_one_card_is_declined(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock)
    assert term.tap(TapRequest("C1"))[0].approved
    clock.advance_ms(60_000)
    decision, _ = term.tap(TapRequest("C1"))
    assert decision.reason == "meal_limit_reached"
    assert term.display.last.lines[0] == "本餐次已就餐"  # type: ignore[union-attr]
    clock.set_ms(ms_from_china("2026-01-07T12:00"))
    assert term.tap(TapRequest("C1"))[0].approved  # a new day


def test_offline_the_display_says_so_loudly(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock, online=False)
    term._on_link_change(False)
    assert OFFLINE_BANNER in term.display.last.lines and term.display.last.tone == "error"  # type: ignore[union-attr]
    decision, sale = term.tap(TapRequest("C1"))
    assert decision.approved and sale is not None and sale.offline
    assert OFFLINE_BANNER in term.display.last.lines  # type: ignore[union-attr]


def test_offline_sales_stop_when_the_deny_list_is_too_old(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock, online=False)
    clock.advance_ms(73 * HOUR_MS)
    term.sync.offline_since_ms = clock.now_ms()  # (offline age is not what is tested here)
    assert term.tap(TapRequest("C1", kind="shop", amount_fen=100))[0].reason == "denylist_too_old"


def test_online_a_wrong_clock_is_corrected_by_the_servers_time(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock)
    term.sync.clock_offset_ms = 2 * HOUR_MS  # the terminal thinks it is 12:00, the server says 14:00
    decision, _ = term.tap(TapRequest("C1"))
    assert decision.reason == "outside_meal_hours"  # lunch ended at 13:30 server time
    decision, sale = term.tap(TapRequest("C1", kind="shop", amount_fen=100))
    assert sale is not None and sale.occurred_at_ms == NOON + 2 * HOUR_MS


def test_new_prices_apply_from_the_next_tap(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock)
    assert term.tap(TapRequest("C1"))[0].amount_fen == 1200
    dearer = {
        **CANTEEN,
        "meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1300, "visitor_price_fen": 1500}},
    }
    term.store.apply_changes(2, decode_changes(({"kind": "canteen", "canteen_id": "C01", "config": dearer},)))
    assert term.tap(TapRequest("C2"))[0].amount_fen == 1500
    assert term.tap(TapRequest("C1", kind="shop", items=(("tissue", 1),)))[0].amount_fen == 350
    clock.set_ms(ms_from_china("2026-01-07T12:00"))
    assert term.tap(TapRequest("C1"))[0].amount_fen == 1300


def test_new_risk_limits_apply_from_the_next_tap_and_other_deltas_leave_the_rules(
    tmp_path: Path, clock: FakeClock
) -> None:
    term = make_terminal(tmp_path, clock)
    assert term.tap(TapRequest("C1"))[0].approved
    unrelated = {"kind": "card", "card_id": "C3", "holder_id": "H2", "status": "active"}
    term.store.apply_changes(2, decode_changes((unrelated,)))
    rules = term.rules()
    assert term.rules() is rules  # the same text: not parsed again
    tighter = {"kind": "settings", "config": {"risk": {"max_sale_fen": 1000}}}
    term.store.apply_changes(3, decode_changes((tighter,)))
    assert term.rules()[1].max_sale_fen == 1000
    assert term.tap(TapRequest("C2", kind="shop", amount_fen=1200))[0].reason == "pin_required"


def test_declines_are_recorded_for_the_operators_totals(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock)
    term.tap(TapRequest("nope"))
    rows = term.store.conn.execute("SELECT card_id, reason FROM declines").fetchall()
    assert [tuple(r) for r in rows] == [("nope", "card_unknown")]
    assert term.totals().declines == {"card_unknown": 1}


def test_the_store_file_keeps_its_data_across_a_reopen(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock)
    _, sale = term.tap(TapRequest("C1"))
    term.store.close()
    store = Store(tmp_path / "t.sqlite")
    assert store.pending_count() == 1 and store.oldest_pending_ms() == sale.occurred_at_ms  # type: ignore[union-attr]


def test_the_watermark_runs_on_the_clock_sales_are_dated_by(tmp_path: Path, clock: FakeClock) -> None:
    term = make_terminal(tmp_path, clock)
    term.sync.clock_offset_ms = -2 * HOUR_MS  # the terminal's clock is two hours fast
    _, first = term.tap(TapRequest("C1", kind="shop", amount_fen=100))
    assert term.sync.watermark_ms() == first.occurred_at_ms == NOON - 2 * HOUR_MS  # type: ignore[union-attr]
    term.store.conn.execute("DELETE FROM outbox")
    watermark = term.sync.watermark_ms()
    _, second = term.tap(TapRequest("C1", kind="shop", amount_fen=100))
    assert watermark <= second.occurred_at_ms  # type: ignore[union-attr]


# one step of the sync agent's store: (what it writes, how it commits)
_rules_step_st = st.tuples(
    st.sampled_from(("canteen", "settings", "card", "snapshot")),
    st.sampled_from(("own", "joined", "rolled_back", "joined_unsettled")),
    st.integers(1, 4),  # which of a few texts
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_rules_step_st, max_size=8))
def test_rules_kept_by_the_epoch_are_the_rules_read_from_the_store(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, str, int]]
) -> None:
    """Terminal.rules() skips reading the canteen config and settings while the store's rules
    epoch stands still: after any mix of deltas written by the sync agent's connection (in
    their own transaction, in the agent's, rolled back, or committed and not yet settled) it
    gives what parsing the stored text now gives."""
    clock = FakeClock(NOON)
    term = make_terminal(tmp_path_factory.mktemp("rules"), clock)
    sync_store = term.sync.store  # the other connection, as the sync thread writes
    version = term.store.delta_version
    for kind, commit, n in steps:
        version += 1
        change = {
            "canteen": {
                "kind": "canteen",
                "canteen_id": "C01",
                "config": {**CANTEEN, "risk": {"max_sale_fen": n}},
            },
            "settings": {"kind": "settings", "config": {"risk": {"max_sale_fen": 100 * n}}},
            "card": {"kind": "card", "card_id": f"C{n}", "holder_id": "H1", "status": "active"},
            "snapshot": {"kind": "canteen", "canteen_id": "C01", "config": {**CANTEEN, "unit_id": f"U{n}"}},
        }[kind]
        decoded = decode_changes((change,))
        snapshot = kind == "snapshot"
        term.rules()  # a tap while the change is on its way
        if commit == "own":
            sync_store.apply_changes(version, decoded, snapshot=snapshot)
        elif commit == "rolled_back":
            with contextlib.suppress(_Undone), write_txn(sync_store.conn):
                sync_store.apply_changes(version, decoded, snapshot=snapshot)
                assert term.rules() == _rules_read_now(term)  # not committed: the old text
                raise _Undone
            version -= 1
        else:
            with write_txn(sync_store.conn):
                sync_store.apply_changes(version, decoded, snapshot=snapshot)
                term.rules()
            if commit == "joined":
                sync_store.settle_rules()
        assert term.rules() == _rules_read_now(term)


class _Undone(Exception):
    """Rolls a test's transaction back."""


def _rules_read_now(term: Terminal) -> object:
    """The general path: the rules parsed from the text as stored now, no cache."""
    kept = term._rules
    term._rules = None
    try:
        return term.rules()
    finally:
        term._rules = kept
