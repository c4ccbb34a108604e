"""The ingest's cheaper paths give what the general ones give.

* :func:`server.books.periods.year_of_ms` and :func:`china_day_of_ms` are computed once per
  UTC hour: the same as the zone-aware datetime on any instant (the daylight-saving summers
  of 1986-1991 and instants before 1970 included).
* the delta log stores each change as ``json.dumps(…, ensure_ascii=False, separators=(",",
  ":"))`` wrote it (the triggers on ``deltas`` match that text), and reads it back as
  ``json.loads`` did.
* a canteen config's parse is shared between transactions: equal to ``json.loads`` of the
  text, and the cache stays bounded.
"""

from __future__ import annotations

import json
import sqlite3

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from server.books.periods import china_day_of_ms, year_of_ms
from server.downstream.deltas import MAX_DELTA_BYTES, _chunks, record_delta
from server.infra.db import write_txn
from server.sales import sale_facts
from shared.clock import china_datetime, start_of_china_day_ms

_DST_SUMMERS = st.integers(515_000_000_000, 690_000_000_000)  # 1986-04 … 1991-11
_ANY_MS = st.integers(-3_000_000_000_000, 4_200_000_000_000)  # 1874 … 2103


@given(st.one_of(_ANY_MS, _DST_SUMMERS))
@settings(max_examples=400)
def test_the_beijing_year_and_day_per_hour_are_the_zone_aware_ones(at_ms: int) -> None:
    dt = china_datetime(at_ms)
    assert year_of_ms(at_ms) == dt.year
    assert china_day_of_ms(at_ms) == (start_of_china_day_ms(at_ms), dt.date().isoformat())


def test_every_hour_of_a_daylight_saving_summer_is_in_its_own_day() -> None:
    # 1986-05-04 02:00 (+8) became 03:00 (+9); 1986-09-14 back: every minute of the year
    for at_ms in range(504_892_800_000, 536_428_800_000, 60_000 * 17):
        dt = china_datetime(at_ms)
        assert china_day_of_ms(at_ms) == (start_of_china_day_ms(at_ms), dt.date().isoformat())


# text a change can hold: no lone surrogates (no UTF-8 for them: the database refuses them)
_TEXT = st.characters(blacklist_categories=("Cs",))
_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(_TEXT))
_CHANGE = st.dictionaries(
    st.text(_TEXT, max_size=8),
    st.recursive(
        _JSON_SCALARS,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(_TEXT, max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    max_size=6,
)


@given(st.lists(_CHANGE, min_size=1, max_size=6))
@settings(max_examples=300)
def test_a_delta_is_stored_as_the_compact_json_text_it_always_was(changes: list[dict]) -> None:
    assert _chunks([orjson.dumps(c) for c in changes]) == _chunks_as_json_dumps_did(changes)
    assert orjson.loads(_chunks_as_json_dumps_did(changes)[0]) == changes


def test_deltas_split_where_they_did_and_read_back_as_written(conn: sqlite3.Connection) -> None:
    change = {"kind": "holder", "holder_id": "H", "unit_id": "单位01", "subsidy_fen": 1, "self_fen": 2}
    big = [{**change, "holder_id": f"H{i:06d}", "blocked": i % 3 == 0} for i in range(12_000)]
    with write_txn(conn):
        record_delta(conn, big, 0)
    rows = conn.execute("SELECT changes_json FROM deltas ORDER BY version").fetchall()
    assert len(rows) > 1
    assert [r[0] for r in rows] == _chunks_as_json_dumps_did(big)
    assert all(len(r[0].encode()) <= MAX_DELTA_BYTES for r in rows)
    assert [c for r in rows for c in json.loads(r[0])] == big
    assert "".join(r[0] for r in rows).count('"kind":"holder"') == len(big)


def _chunks_as_json_dumps_did(changes: list[dict]) -> list[str]:
    """The delta texts as record_delta wrote them with json.dumps (the specification)."""
    out: list[str] = []
    current: list[str] = []
    size = 2
    for item in [json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in changes]:
        if current and size + len(item.encode()) + 1 > MAX_DELTA_BYTES:
            out.append("[" + ",".join(current) + "]")
            current, size = [], 2
        current.append(item)
        size += len(item.encode()) + 1
    out.append("[" + ",".join(current) + "]")
    return out


@given(st.lists(_CHANGE, max_size=3))
def test_a_config_parse_is_json_loads(values: list[dict]) -> None:
    for value in values:
        text = json.dumps(value, ensure_ascii=False)
        assert sale_facts._as_dict(text) == json.loads(text)
        assert sale_facts._as_dict(text) is sale_facts._as_dict(text)  # read once
    assert sale_facts._as_dict("[1, 2]") == {}  # not an object: no config
    assert sale_facts._as_dict("") == {} and sale_facts._as_dict(None) == {}


def test_the_config_parse_cache_stays_bounded() -> None:
    maxsize = sale_facts._parsed.cache_info().maxsize
    assert maxsize is not None
    for i in range(maxsize * 2 + 5):
        assert sale_facts._as_dict(json.dumps({"meals": i})) == {"meals": i}
    assert sale_facts._parsed.cache_info().currsize <= maxsize


def test_a_batchs_configs_and_settings_read_together_are_those_read_apart(conn: sqlite3.Connection) -> None:
    from server.downstream.changes import canteen_change
    from server.registry import units
    from server.sales.sale_facts import FactsBook

    with write_txn(conn):
        units.add_unit(conn, "U1", "单位一", 30_000)
        for i, at in enumerate((1_000, 2_000, 3_000)):
            units.set_terminal_settings(conn, {"risk": {"max_sale_fen": 5_000 + i}}, at)
        for c in ("C1", "C2", "C3"):
            units.add_canteen(conn, c, f"食堂{c}", "U1", config={"meals": {"lunch": 1200}}, now_ms=1_500)
        for at in (2_500, 4_000):  # C1's prices change twice, recorded in the delta log
            conn.execute("UPDATE canteens SET config_json = ? WHERE id = 'C1'", (json.dumps({"items": at}),))
            row = conn.execute("SELECT * FROM canteens WHERE id = 'C1'").fetchone()
            record_delta(conn, [canteen_change(row)], at)
        # C2 changed without a delta (its history ends before the current config)
        conn.execute("UPDATE canteens SET config_json = '{\"risk\": {\"max_sale_fen\": 7}}' WHERE id = 'C2'")
    wanted = ["C1", "C2", "C3", "C-unknown"]
    together = FactsBook(conn, 9_000)
    together.prefetch(["T1"], wanted)
    apart = FactsBook(conn, 9_000)
    settings = apart._settings_history()  # the settings' own two queries
    apart.prefetch(["T1"], wanted)  # the canteens' queries alone
    assert together._settings == settings
    assert len(settings[1]) == 3 and settings[1][-1] == {"risk": {"max_sale_fen": 5_002}}
    assert together._canteens == apart._canteens
    assert together._canteens["C1"][1][-1]["items"] == 4_000
    assert together._canteens["C2"][1][-1] == {"risk": {"max_sale_fen": 7}, "unit_id": "U1"}
    assert together._canteens["C-unknown"] == ([], [])


def test_a_batch_finds_its_stored_keys_and_uuids_in_one_read(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    """Stored keys and stored uuids are read in one query per batch: a copy is answered
    ``duplicate``, a reused number or a reused uuid ``sale_id_conflict``, the rest decided."""
    from dataclasses import replace

    from server.books import ledger
    from server.sales.apply import SaleApplier
    from tests.money_world import MoneyWorld

    w = MoneyWorld(conn, clock)
    w.topup("K001", 5_000)
    first, second = w.new_sale("K001", 100), w.new_sale("K001", 200)
    assert [r.status for r in w.send(first, second)] == ["applied", "applied"]
    batch = [
        first,  # a copy
        replace(w.new_sale("K001", 300), uuid=second.uuid),  # a new number, another sale's uuid
        replace(second, uuid="f" * 32),  # a stored number with a new uuid
        w.new_sale("K001", 400),  # new
        w.new_sale("K001", 500),  # new
    ]
    with write_txn(conn):
        applier = SaleApplier(conn, clock.now_ms(), 99, ledger.AccountCache())
        applier.prefetch(batch)
        slots = [applier.apply(s, s.canteen_id) for s in batch]
        results = applier.finish()
    assert [(results[i].status, results[i].reason) for i in slots] == [
        ("duplicate", None),
        ("rejected", "sale_id_conflict"),
        ("rejected", "sale_id_conflict"),
        ("applied", None),
        ("applied", None),
    ]
    assert results[slots[0]].self_fen == 100
    assert conn.execute("SELECT count(*) FROM sales").fetchone()[0] == 4


def test_one_read_of_the_terminals_is_the_reads_it_replaced(conn: sqlite3.Connection) -> None:
    """The ingest reads its terminals once (:func:`revocations_with`): the revocation, the
    creation time and whether a reversal waits are what :func:`revocations`, the facts' own
    read and :func:`_any_waiting` give, for every subset of terminals (some unknown)."""
    from itertools import combinations

    from server.registry import terminals, units
    from server.sales.ingest import _TERMINAL_COLUMNS, _any_waiting, _waiting
    from server.sales.sale_facts import FactsBook

    ids = ["T1", "T2", "T3", "T4"]
    with write_txn(conn):
        units.add_unit(conn, "U1", "单位一", 30_000)
        units.add_canteen(conn, "C1", "食堂一", "U1", config={}, now_ms=1_000)
        for i, t in enumerate(ids):
            conn.execute(
                "INSERT INTO terminals(id, canteen_id, secret_hex, created_at_ms) VALUES (?, 'C1', ?, ?)",
                (t, "00" * 32, 10_000 + i),
            )
        terminals.revoke(conn, "T2", 50_000)
        conn.execute("UPDATE terminals SET state = 'revoked' WHERE id = 'T4'")  # revoked, time unknown
        for t, seq, status in (("T3", 1, "pending"), ("T1", 1, "applied"), ("T4", 2, "pending")):
            conn.execute(
                "INSERT INTO reversals(terminal_id, seq, uuid, sale_seq, sale_uuid, canteen_id, "
                "operator_card, amount_fen, method, occurred_at_ms, received_at_ms, status, reversal_json) "
                "VALUES (?, ?, ?, 7, 'u', 'C1', 'K9', 100, 'card', 1, 1, ?, '{}')",
                (t, seq, f"{t}-{seq}", status),
            )
    asked = [*ids, "T-unknown"]
    rows = terminals.revocations_with(conn, asked, _TERMINAL_COLUMNS)
    assert {t: r[0] if r else None for t, r in rows.items()} == terminals.revocations(conn, asked)
    assert rows["T2"][0] == 50_000 and rows["T4"][0] == 0 and rows["T-unknown"] is None
    apart, told = FactsBook(conn, 90_000), FactsBook(conn, 90_000)
    apart.prefetch(asked, ())
    told.know_terminals({t: r[1] for t, r in rows.items() if r})
    told.prefetch(asked, ())  # reads only the unknown one
    assert told._terminals == apart._terminals
    known = {t: bool(r[2]) for t, r in rows.items() if r}
    assert known == {"T1": False, "T2": False, "T3": True, "T4": True}
    for n in range(len(asked) + 1):
        for subset in combinations(asked, n):
            wanted = bool(subset) and _any_waiting(conn, set(subset))
            assert _waiting(conn, set(subset), known) == wanted
            assert _waiting(conn, set(subset), {}) == wanted


def test_the_terminals_waiting_reversals_are_read_by_the_waiting_index(conn: sqlite3.Connection) -> None:
    """Whether a terminal has a reversal waiting is answered from the partial index of the
    waiting ones, never by reading every reversal the terminal made (SQLite's planner,
    without statistics, took the covering ``reversals_sale`` before migration 25)."""
    import pytest

    from server.infra.db import dialect
    from server.sales.ingest import _TERMINAL_COLUMNS

    if dialect(conn) != "sqlite":
        pytest.skip("SQLite's query plan")
    extra = "".join(f", {c}" for c in _TERMINAL_COLUMNS)
    asked = [
        f"SELECT t.id{extra} FROM terminals t WHERE t.id IN (?, ?)",
        "SELECT 1 FROM reversals WHERE status = 'pending' AND terminal_id IN (?, ?) LIMIT 1",
        "SELECT * FROM reversals WHERE status = 'pending' AND terminal_id IN (?, ?)",
    ]
    for sql in asked:
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, ("T1", "T2")))
        assert "reversals_waiting (terminal_id=? AND status=?)" in plan, plan
