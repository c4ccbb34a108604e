"""What the console reads instead of scanning (issue 14's dashboard and person search must be
fast at 1,000,000 sales and 20,000 people; bench/bench_web.py measures them):

* the takings per 15 minutes and per day (``sale_slots``, ``sale_days``) — written with the
  sales in the ingest transaction, equal to the sums of the applied sales after any mix of
  sales, duplicates, refusals and quarantine (a hypothesis property), the dashboard's figures
  equal to the reports' that read the sales, and ``check`` catching a tampered sum;
* the name index (``holder_name_grams``) — a search through it finds exactly the holders a
  scan with LIKE finds (a hypothesis property), kept in step by every writer of a name
  (holder added, renamed through the API, roster import), checked by ``check``;
* both filled by their migration from the data already there, the same way the code does;
* the overdrafts found from the index of accounts below zero.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.books import ledger
from server.closing import reports
from server.closing.check import all_violations
from server.infra.auth import create_token
from server.infra.db import connect, like_contains, open_db, write_txn
from server.infra.schema import MIGRATIONS
from server.registry import name_search
from server.registry import units as registry
from server.sales import takings
from server.sales.ecny import method_totals
from server.web.dashboard_data import sales_by_slot, takings_of
from server.web.tables import cell_html
from shared.clock import DAY_MS, FakeClock, ms_from_china, start_of_china_day_ms
from tests.helpers import populated
from tests.money_world import MoneyWorld
from tests.web_support import login, make_staff, text_of

NOON = ms_from_china("2026-01-06T12:00")
DAY = start_of_china_day_ms(NOON)


def codes(conn: sqlite3.Connection) -> set[str]:
    return {v.code for v in all_violations(conn)}


def sums_by_sql(conn: sqlite3.Connection, grain: takings.Grain) -> set[tuple]:
    return {tuple(r) for r in conn.execute(grain.from_sales)}


def stored(conn: sqlite3.Connection, grain: takings.Grain) -> set[tuple]:
    cols = f"{grain.key}, canteen_id, method, {', '.join(takings.SUMS)}"
    return {tuple(r) for r in conn.execute(f"SELECT {cols} FROM {grain.table}")}


# --- takings per slot and day -------------------------------------------------------------


@pytest.fixture
def world(conn, clock) -> MoneyWorld:  # noqa: ANN001
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    w.allocate("U02", "2026Q1")
    return w


def test_the_dashboards_takings_equal_the_reports_that_read_the_sales(conn, world, client) -> None:  # noqa: ANN001
    world.topup("K002", 5_000)
    world.sell("K001", 1200, ms_from_china("2026-01-06T11:40"), kind="meal", meal_period="lunch")
    world.sell("K003", 800, ms_from_china("2026-01-06T11:41"), method="qr")
    world.sell(
        "K002", 1000, ms_from_china("2026-01-06T11:55"), canteen="C02", kind="meal", meal_period="lunch"
    )
    world.sell("K002", 40_000, ms_from_china("2026-01-06T09:00"), canteen="C02")  # overdraws: self pays
    world.sell("K004", 350, ms_from_china("2026-01-05T23:59"), canteen="C02")  # yesterday

    by_canteen, by_method = takings_of(conn, DAY, DAY + DAY_MS)
    report = reports.sales_totals(conn, DAY, DAY + DAY_MS)
    assert by_canteen["totals"] == report["totals"]
    assert {c["canteen_id"]: c for c in by_canteen["canteens"]} == {
        c["canteen_id"]: c for c in report["canteens"]
    }
    assert by_method == method_totals(conn, None, DAY, DAY + DAY_MS)
    assert by_canteen["totals"]["self_fen"] > 0  # the overdrawn sale's self part is there too
    assert sum(v or 0 for v in sales_by_slot(conn, DAY)) == report["totals"]["amount_fen"]
    assert all_violations(conn) == []

    make_staff(conn, "admin", NOON)
    login(client, "admin1")
    total = text_of(client.get("/dashboard")).split('id="takings-total">')[1].split("<")[0]
    assert total.strip() == "¥430.00"  # 12 + 8 + 10 + 400 yuan


def test_duplicates_refusals_and_held_sales_are_not_counted_until_applied(conn, world, clock) -> None:  # noqa: ANN001
    at = ms_from_china("2026-01-06T11:40")
    sale = world.new_sale("K001", 1200, at, kind="meal", meal_period="lunch")
    world.send(sale)
    world.send(sale)  # the same sale again: a duplicate
    assert world.sell("K999", 500, at).status == "rejected"  # an unknown card
    held = world.sell("K003", 1100, at, kind="meal", meal_period="lunch")  # not the lunch price
    assert held.status == "quarantined"
    assert takings_of(conn, DAY, DAY + DAY_MS)[0]["totals"]["count"] == 1

    from server.sales import quarantine  # noqa: PLC0415  # the admin's acceptance, only here

    with write_txn(conn):
        quarantine.accept(conn, held.terminal_id, held.seq, clock.now_ms(), "admin")
    totals = takings_of(conn, DAY, DAY + DAY_MS)[0]["totals"]
    assert (totals["count"], totals["amount_fen"]) == (2, 2300)
    assert all_violations(conn) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * DAY_MS - 1),  # when, over three Beijing days
            st.sampled_from(["K001", "K002", "K003", "K004", "K404"]),
            st.integers(1, 3_000),
            st.sampled_from(["C01", "C02"]),
            st.sampled_from(["card", "qr", "face"]),
            st.booleans(),  # sent twice
        ),
        max_size=30,
    )
)
def test_the_sums_are_the_applied_sales_after_any_history(history: list[tuple]) -> None:
    conn = open_db(":memory:")
    w = MoneyWorld(conn, FakeClock(NOON))
    w.allocate("U01", "2026Q1")
    start = ms_from_china("2026-01-05T00:00")
    for offset, card, amount, canteen, method, twice in history:
        sale = w.new_sale(card, amount, start + offset, canteen, method=method)
        w.send(sale, sale) if twice else w.send(sale)
    for grain in takings.GRAINS:
        assert stored(conn, grain) == sums_by_sql(conn, grain)
    assert takings.mismatches(conn) == []
    applied = conn.execute(
        "SELECT count(*), coalesce(sum(amount_fen), 0) FROM sales WHERE status = 'applied'"
    )
    assert tuple(applied.fetchone()) == tuple(
        conn.execute("SELECT coalesce(sum(count), 0), coalesce(sum(amount_fen), 0) FROM sale_days").fetchone()
    )
    conn.close()


@given(st.integers(ms_from_china("1992-01-01T00:00"), 4_000_000_000_000))  # no daylight saving since 1991
def test_a_day_starts_at_midnight_in_beijing(ms: int) -> None:
    assert takings.day_of(ms) == start_of_china_day_ms(ms)
    assert takings.slot_of(ms) <= ms < takings.slot_of(ms) + takings.SLOT_MS


def test_check_catches_sums_that_differ_from_the_sales(conn, world) -> None:  # noqa: ANN001
    world.sell("K001", 1200, ms_from_china("2026-01-06T11:40"), kind="meal", meal_period="lunch")
    world.sell("K003", 700, ms_from_china("2026-01-06T11:50"))
    assert all_violations(conn) == []
    first = "(SELECT min(slot_ms) FROM sale_slots)"
    conn.execute(f"UPDATE sale_slots SET amount_fen = amount_fen + 1 WHERE slot_ms = {first}")
    assert codes(conn) == {"sale_sums_mismatch"}
    with write_txn(conn):
        takings.rebuild(conn)
    assert all_violations(conn) == []
    conn.execute("DELETE FROM sale_days")  # a day's sums lost
    assert codes(conn) == {"sale_sums_mismatch"}
    with write_txn(conn):
        takings.rebuild(conn)
    empty_slot = takings.slot_of(NOON) - DAY_MS
    for count in (1, 0):  # a slot no sale was in, counting one sale or none
        conn.execute("INSERT INTO sale_slots VALUES (?, 'C01', 'card', ?, 500, 500, 0)", (empty_slot, count))
        assert codes(conn) == {"sale_sums_mismatch"}, count
        conn.execute("DELETE FROM sale_slots WHERE slot_ms = ?", (empty_slot,))
    assert all_violations(conn) == []


# --- the name index -----------------------------------------------------------------------


def test_grams_are_every_character_and_neighbouring_pair_in_lower_case() -> None:
    assert name_search.grams("张三丰") == {"张", "三", "丰", "张三", "三丰"}
    assert name_search.grams("Li Na") == {"l", "i", " ", "n", "a", "li", "i ", " n", "na"}
    assert name_search.grams("") == set()


NAMES = st.text(alphabet="张王李三丰伟AbB _%", min_size=0, max_size=5)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(NAMES, min_size=1, max_size=25),
    q=st.text(alphabet="张王李三丰伟aAbB _%", min_size=1, max_size=4),
    scoped=st.booleans(),
)
def test_a_search_through_the_index_finds_what_a_scan_finds(names: list[str], q: str, scoped: bool) -> None:
    conn = open_db(":memory:")
    with write_txn(conn):
        registry.add_unit(conn, "U01", "一单位", 1000)
        registry.add_unit(conn, "U02", "二单位", 1000)
        for i, name in enumerate(names):
            registry.add_holder(conn, f"H{i:03d}", f"U0{1 + i % 2}", name, f"K{i:03d}", now_ms=NOON)
    found = name_search.plan(conn, q, scoped=scoped)
    scope = "h.unit_id = 'U01' AND " if scoped else ""
    got = {r[0] for r in conn.execute(f"SELECT h.id FROM holders h WHERE {scope}{found.sql}", found.args)}
    scan = {
        r[0]
        for r in conn.execute(
            f"SELECT h.id FROM holders h WHERE {scope}h.name LIKE ? ESCAPE '\\'", (like_contains(q),)
        )
    }
    assert got == scan
    if found.total is not None:
        assert found.total == len(scan)
    assert name_search.mismatches(conn) == []
    conn.close()


def test_a_common_name_is_walked_in_page_order_and_counted_from_the_index(conn, clock) -> None:  # noqa: ANN001
    with write_txn(conn):
        registry.add_unit(conn, "U01", "一单位", 1000)
        for i in range(name_search.SELECTIVE + 5):
            registry.add_holder(conn, f"H{i:05d}", "U01", "王" + "伟芳"[i % 2], f"K{i:05d}", now_ms=NOON)
    common = name_search.plan(conn, "王", scoped=False)
    assert "holder_name_grams" not in common.sql and common.total == name_search.SELECTIVE + 5
    rare = name_search.plan(conn, "王伟芳", scoped=False)  # three characters: pairs, then LIKE
    assert "holder_name_grams" in rare.sql and rare.total is None
    assert name_search.plan(conn, "王", scoped=True).total is None  # a clerk's unit: counted


def test_every_writer_of_a_name_keeps_the_index_in_step(app, conn, clock, client) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with write_txn(conn):
        admin = create_token(conn, "admin", clock.now_ms())
    resp = client.patch(
        "/api/v1/holders/H00001", json={"name": "欧阳修"}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert resp.status_code == 200, resp.get_json()
    assert {r[0] for r in conn.execute("SELECT holder_id FROM holder_name_grams WHERE gram = '欧阳'")} == {
        "H00001"
    }
    assert name_search.mismatches(conn) == []
    conn.execute("UPDATE holders SET name = '司马光' WHERE id = 'H00002'")  # behind the index's back
    assert codes(conn) == {"name_index_mismatch"}
    with write_txn(conn):
        name_search.rebuild(conn)
    assert all_violations(conn) == []


def test_the_roster_import_indexes_new_people_and_follows_renames(conn) -> None:  # noqa: ANN001
    from server.registry import roster  # noqa: PLC0415  # only this test imports a roster

    with write_txn(conn):
        registry.add_unit(conn, "U01", "市财政局", 30_000)
        roster.import_roster(conn, "单位名称,姓名,工号,卡号\n市财政局,张三丰,001,04A1\n".encode(), NOON)
    assert {r[0] for r in conn.execute("SELECT gram FROM holder_name_grams")} == name_search.grams("张三丰")
    with write_txn(conn):
        roster.import_roster(conn, "单位名称,姓名,工号,卡号\n市财政局,张三,001,04A1\n".encode(), NOON)
    assert {r[0] for r in conn.execute("SELECT gram FROM holder_name_grams")} == name_search.grams("张三")
    assert name_search.mismatches(conn) == []


def test_the_people_page_finds_a_name_through_the_index(app, conn, clock, client) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with write_txn(conn):
        name_search.rename(conn, "H00001", "欧阳修")
    make_staff(conn, "admin", clock.now_ms())
    login(client, "admin1")
    page = text_of(client.get("/people?q=阳修"))
    assert "欧阳修" in page and "共 1 条" in page
    assert "没有符合条件的记录" in text_of(client.get("/people?q=阳修X"))


# --- migration 19 fills what it creates ---------------------------------------------------


@pytest.mark.sqlite_only("migrates an old SQLite file")
def test_the_migration_fills_the_sums_and_the_index_from_the_data_already_there(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "old.sqlite"
    conn = connect(path)
    for number, sql in enumerate(MIGRATIONS[:18], start=1):  # a database from before migration 19
        conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    names = ["张三丰", "Li Na", "欧阳𠀀", "A", "", "王_%\\"]
    with write_txn(conn):
        conn.execute("INSERT INTO units(id, name) VALUES ('U01', '一单位')")
        conn.executemany(
            "INSERT INTO holders(id, unit_id, name) VALUES (?, 'U01', ?)",
            [(f"H{i}", n) for i, n in enumerate(names)],
        )
        conn.executemany(
            "INSERT INTO sales(terminal_id, seq, uuid, status, card_id, holder_id, canteen_id, amount_fen, "
            "subsidy_fen, self_fen, method, kind, occurred_at_ms, received_at_ms) "
            "VALUES ('T1', ?, ?, ?, 'K1', 'H0', 'C01', ?, ?, ?, ?, 'shop', ?, ?)",
            [
                (
                    i,
                    f"u{i}",
                    "rejected" if i % 7 == 0 else "applied",
                    100 + i,
                    100 + i - i % 3,
                    i % 3,
                    "qr" if i % 2 else "card",
                    NOON + i * 600_000 - 12 * 3_600_000,
                    NOON,
                )
                for i in range(60)
            ],
        )
    conn.close()
    conn = open_db(path)  # migrates to the end
    assert takings.mismatches(conn) == [] and name_search.mismatches(conn) == []
    assert conn.execute("SELECT count(*) FROM sale_days").fetchone()[0] >= 2
    conn.close()


# --- overdrafts from the index of accounts below zero ------------------------------------


@pytest.mark.sqlite_only("reads SQLite's query plan")
def test_overdrafts_are_read_from_the_accounts_below_zero(conn, world) -> None:  # noqa: ANN001
    world.sell("K002", 40_000, ms_from_china("2026-01-06T09:00"))
    over = reports.overdrafts(conn)
    assert [h["holder_id"] for h in over["holders"]] == ["H002"]
    assert over["total_overdrawn_fen"] == -ledger.balance(conn, ledger.self_purse("H002")) > 0
    plan = " ".join(
        r[3]
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM accounts a WHERE a.kind = 'self_purse' AND a.balance_fen < 0"
        )
    )
    assert "accounts_overdrawn" in plan


def test_a_tables_links_are_the_addresses_url_for_gives(app) -> None:  # noqa: ANN001
    from flask import url_for  # noqa: PLC0415
    from markupsafe import escape  # noqa: PLC0415

    from server.web.people import PEOPLE  # noqa: PLC0415

    column = PEOPLE.column("name")
    assert column is not None
    with app.test_request_context("/people"):
        for holder_id in ("H00001", "H 1/2?&", "张三"):
            html = str(cell_html(column, {"name": "<b>", "id": holder_id}))
            assert (
                html == f'<a href="{escape(url_for("web_people.person", holder_id=holder_id))}">&lt;b&gt;</a>'
            )
