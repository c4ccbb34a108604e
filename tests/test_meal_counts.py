"""The meal limit across terminals: the server sends each holder's meals of the day with
the holder change, and a terminal counts them together with its own journal."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from server.downstream.deltas import deltas_since
from server.downstream.snapshot import build_snapshot
from shared.clock import FakeClock, ms_from_china, start_of_china_day_ms
from shared.protocol import Delta, ProtocolError, Snapshot
from shared.protocol.messages import HolderChange, Meals, decode_change, decode_changes
from terminal.store import Store
from tests.money_world import MoneyWorld
from tests.terminal_support import journal_sale

LUNCH = ms_from_china("2026-01-06T12:00")
DAY = "2026-01-06"


def holder_change_in_last_delta(conn: sqlite3.Connection, holder_id: str) -> dict[str, Any]:
    delta = deltas_since(conn, 0, limit=100_000)[-1]
    return next(c for c in delta.changes if c["kind"] == "holder" and c["holder_id"] == holder_id)


# --- the server --------------------------------------------------------------------------


def test_each_meal_sale_sends_the_holders_meals_of_the_day_by_canteen_and_period(
    conn: sqlite3.Connection, clock: FakeClock
) -> None:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.sell("K001", 500, LUNCH - 4 * 3600_000, meal_period="breakfast")
    w.sell("K001", 1200, LUNCH, meal_period="lunch")
    assert holder_change_in_last_delta(conn, "H001")["meals"] == {
        "day": DAY,
        "taken": {"C01": {"breakfast": 1, "lunch": 1}},
    }
    clock.advance_ms(600_000)
    w.sell("K001", 1000, LUNCH + 600_000, canteen="C02", meal_period="lunch")
    assert holder_change_in_last_delta(conn, "H001")["meals"] == {
        "day": DAY,
        "taken": {"C01": {"breakfast": 1, "lunch": 1}, "C02": {"lunch": 1}},
    }


def test_a_shop_sale_or_a_top_up_says_nothing_about_meals(conn: sqlite3.Connection, clock: FakeClock) -> None:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.sell("K001", 350, LUNCH, kind="shop", meal_period=None)
    assert "meals" not in holder_change_in_last_delta(conn, "H001")
    w.topup("K001", 1000)
    assert "meals" not in holder_change_in_last_delta(conn, "H001")


def test_a_late_sale_of_an_earlier_day_counts_that_day_only(
    conn: sqlite3.Connection, clock: FakeClock
) -> None:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.sell("K001", 1200, LUNCH, meal_period="lunch")
    w.sell("K001", 1200, LUNCH - 86_400_000, meal_period="lunch")  # yesterday's lunch, uploaded late
    assert holder_change_in_last_delta(conn, "H001")["meals"] == {
        "day": "2026-01-05",
        "taken": {"C01": {"lunch": 1}},
    }


def test_one_transaction_counts_each_holder_on_the_day_of_their_own_meal(
    conn: sqlite3.Connection, clock: FakeClock
) -> None:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.sell("K003", 1200, LUNCH, meal_period="lunch")  # H003 ate today too
    w.send(
        w.new_sale("K001", 1200, LUNCH, meal_period="lunch"),
        w.new_sale("K003", 1200, LUNCH - 86_400_000, meal_period="lunch"),  # uploaded late
    )
    assert holder_change_in_last_delta(conn, "H001")["meals"] == {"day": DAY, "taken": {"C01": {"lunch": 1}}}
    assert holder_change_in_last_delta(conn, "H003")["meals"] == {
        "day": "2026-01-05",
        "taken": {"C01": {"lunch": 1}},
    }


def test_a_fresh_terminals_snapshot_carries_todays_meals(conn: sqlite3.Connection, clock: FakeClock) -> None:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.sell("K001", 1200, LUNCH, meal_period="lunch")
    w.sell("K003", 1200, LUNCH - 86_400_000, meal_period="lunch")  # yesterday: not today's business
    w.sell("K003", 350, LUNCH, kind="shop", meal_period=None)
    holders = {
        c["holder_id"]: c for c in build_snapshot(conn, LUNCH + 3600_000).changes if c["kind"] == "holder"
    }
    assert holders["H001"]["meals"] == {"day": DAY, "taken": {"C01": {"lunch": 1}}}
    assert "meals" not in holders["H003"]
    change = decode_change(holders["H001"])
    assert isinstance(change, HolderChange) and change.meals == Meals(DAY, {"C01": {"lunch": 1}})
    tomorrow = build_snapshot(conn, LUNCH + 86_400_000).changes
    assert not any("meals" in c for c in tomorrow)


def test_every_change_the_server_sends_passes_the_protocol(
    conn: sqlite3.Connection, clock: FakeClock
) -> None:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.sell("K001", 1200, LUNCH, meal_period="lunch")
    deltas = [json.loads(json.dumps(d.to_body())) for d in deltas_since(conn, 0, limit=100_000)]
    sent = [c for body in deltas for c in body["changes"]]
    # what this world must have sent, so that an empty stream cannot pass: its cardholders,
    # cards and canteens, and after the sale the holder's meals of the day
    assert {c["kind"] for c in sent} >= {"holder", "card", "canteen"}
    h001 = [c for c in sent if c["kind"] == "holder" and c["holder_id"] == "H001"]
    assert {"day": DAY, "taken": {"C01": {"lunch": 1}}} in [c.get("meals") for c in h001]
    for body in deltas:  # each decodes, and its typed records say exactly what was sent
        assert Delta.from_body(body).to_body() == body
    snapshot = json.loads(json.dumps(build_snapshot(conn, LUNCH).to_body()))
    assert {c["kind"] for c in snapshot["changes"]} >= {"holder", "card", "canteen", "settings"}
    assert Snapshot.from_body(snapshot).to_body() == snapshot


# --- the wire ----------------------------------------------------------------------------

HOLDER = {
    "kind": "holder",
    "holder_id": "H1",
    "unit_id": "U01",
    "subsidy_fen": 3000,
    "self_fen": 0,
    "blocked": False,
}


@pytest.mark.parametrize(
    ("meals", "detail"),
    [
        ({"day": "2026-1-6", "taken": {}}, "YYYY-MM-DD"),
        ({"day": "２０２６-01-06", "taken": {}}, "YYYY-MM-DD"),
        ({"day": DAY, "taken": {"C01": {"supper": 1}}}, "period"),
        ({"day": DAY, "taken": {"C01": {"lunch": -1}}}, "lunch"),
        ({"day": DAY, "taken": {"C01": {"lunch": True}}}, "lunch"),
        ({"day": DAY, "taken": {"C01": {"lunch": 1}}, "extra": 1}, "unknown field"),
        ({"day": DAY, "taken": {"C01": {"lunch": 10_001}}}, "lunch"),
        ({"day": DAY, "taken": {f"C{i}": {} for i in range(1001)}}, "canteens"),
    ],
)
def test_a_malformed_meal_count_is_refused_by_name(meals: object, detail: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_change({**HOLDER, "meals": meals})
    assert err.value.code in ("bad_field", "unknown_field")
    assert detail in str(err.value)


# --- the terminal ------------------------------------------------------------------------

CARD = {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "t.sqlite")
    s.apply_changes(1, decode_changes((HOLDER, CARD)))
    return s


def taken(store: Store, canteen: str = "C01", period: str = "lunch", day: str = DAY) -> int:
    return store.meals_taken("H1", canteen, period, day, start_of_china_day_ms(ms_from_china(day + "T12:00")))


def with_meals(n: int, day: str = DAY, canteen: str = "C01") -> dict[str, Any]:
    return {**HOLDER, "meals": {"day": day, "taken": {canteen: {"lunch": n}}}}


def lunch_here(store: Store, at_ms: int = LUNCH) -> None:
    journal_sale(store, 1200, at_ms, meal_period="lunch", announced=True)


def test_another_terminals_meal_counts_here(store: Store) -> None:
    assert taken(store) == 0
    store.apply_changes(2, decode_changes((with_meals(1),)))
    assert taken(store) == 1
    assert taken(store, canteen="C02") == 0  # the limit is each canteen's own rule
    assert taken(store, period="dinner") == 0
    assert taken(store, day="2026-01-07") == 0  # a new day starts from zero


def test_own_unacknowledged_meals_add_to_the_servers_count(store: Store) -> None:
    store.apply_changes(2, decode_changes((with_meals(1),)))
    lunch_here(store)
    assert taken(store) == 2


def test_own_journal_counts_when_the_servers_count_is_older(store: Store) -> None:
    lunch_here(store)
    lunch_here(store)
    store.conn.execute("UPDATE journal SET status = 'applied'")  # acked; no delta yet
    assert taken(store) == 2


def test_a_late_count_of_an_earlier_day_does_not_replace_todays(store: Store) -> None:
    store.apply_changes(2, decode_changes((with_meals(2),)))
    store.apply_changes(3, decode_changes((with_meals(1, day="2026-01-05"),)))
    assert taken(store) == 2
    store.apply_changes(4, decode_changes((HOLDER,)))  # a top-up: no meals in the change, the count stays
    assert taken(store) == 2
