"""Importing the seed's attachment table (信息统计表) and keeping canteen rules valid."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from server.downstream.deltas import current_version, deltas_since
from server.infra.db import write_txn
from server.registry import canteens
from server.registry import units as registry
from shared.errors import DomainError

FIXTURES = Path(__file__).parent / "fixtures" / "registry"
UNITS = [
    ("U01", "市财政局", 30_000),
    ("U02", "市教育局", 30_000),
    ("U03", "市审计局", 24_000),
    ("U04", "市人民医院", 36_000),
]


@pytest.fixture
def units(conn: sqlite3.Connection) -> sqlite3.Connection:
    with write_txn(conn):
        for uid, name, std in UNITS:
            registry.add_unit(conn, uid, name, std)
    return conn


def load(conn: sqlite3.Connection, name: str, now_ms: int, **kw: object) -> dict:
    with write_txn(conn):
        return canteens.import_table(conn, (FIXTURES / name).read_bytes(), now_ms, **kw)  # type: ignore[arg-type]


def by_name(conn: sqlite3.Connection) -> dict[str, dict]:
    return {r["name"]: canteens.to_json(r) for r in conn.execute("SELECT * FROM canteens")}


def test_the_seed_table_with_a_bom_creates_one_canteen_per_counted_canteen(units, clock) -> None:  # noqa: ANN001
    report = load(units, "canteens_seed_bom.csv", clock.now_ms())
    got = by_name(units)
    assert (
        sorted(report["created"])
        == sorted(got)
        == sorted(
            ["市财政局食堂", "市教育局食堂", "市人民医院食堂（门诊楼负一楼）", "市人民医院食堂（住院部三楼）"]
        )
    )
    czj = got["市财政局食堂"]
    assert (czj["unit_id"], czj["location"], czj["contact"], czj["phone"]) == (
        "U01",
        "市财经大楼1楼",
        "王芳",
        "0731-28680001",
    )
    assert (czj["service_staff"], czj["seats"], czj["dining_area_m2"]) == (8, 200, 350.0)
    assert {p: m["price_fen"] for p, m in czj["config"]["meals"].items()} == {
        "breakfast": 500,
        "lunch": 1200,
        "dinner": 1000,
    }
    assert czj["config"]["meals"]["lunch"]["start"] == "11:30"


def test_a_blank_meal_price_means_the_meal_is_not_served(units, clock) -> None:  # noqa: ANN001
    load(units, "canteens_seed_bom.csv", clock.now_ms())
    jyj = by_name(units)["市教育局食堂"]
    assert jyj["config"]["meals"] == {
        "lunch": {"start": "11:30", "end": "13:30", "price_fen": 1050, "visitor_price_fen": None}
    }
    assert jyj["dining_area_m2"] == 180.5


def test_a_unit_with_no_canteen_creates_none(units, clock) -> None:  # noqa: ANN001
    load(units, "canteens_seed_bom.csv", clock.now_ms())
    assert units.execute("SELECT count(*) FROM canteens WHERE unit_id = 'U03'").fetchone()[0] == 0


def test_several_canteens_on_one_row_split_the_listed_values(units, clock) -> None:  # noqa: ANN001
    load(units, "canteens_seed_bom.csv", clock.now_ms())
    got = by_name(units)
    a, b = got["市人民医院食堂（门诊楼负一楼）"], got["市人民医院食堂（住院部三楼）"]
    assert (a["service_staff"], a["seats"], a["dining_area_m2"]) == (12, 150, 200.0)
    assert (b["service_staff"], b["seats"], b["dining_area_m2"]) == (20, 300, 420.0)
    assert a["config"]["meals"] == b["config"]["meals"]


def test_a_title_line_a_two_row_header_and_the_fill_in_note_are_understood(units, clock) -> None:  # noqa: ANN001
    report = load(units, "canteens_two_row_header.csv", clock.now_ms())
    assert report["created"] == ["市财政局食堂"]
    meals = by_name(units)["市财政局食堂"]["config"]["meals"]
    assert {p: m["price_fen"] for p, m in meals.items()} == {"breakfast": 500, "lunch": 1200, "dinner": 1000}


def test_the_header_spellings_a_clerk_types_and_the_extra_columns(units, clock) -> None:  # noqa: ANN001
    load(units, "canteens_clerk_variants.csv", clock.now_ms())
    got = by_name(units)
    czj = got["财政局职工食堂"]
    assert (czj["operator"], czj["self_operated"]) == ("湘味餐饮有限公司", False)
    assert (czj["service_staff"], czj["seats"], czj["dining_area_m2"]) == (8, 200, 350.0)
    assert czj["config"]["meals"]["lunch"] == {
        "start": "11:30",
        "end": "13:00",
        "price_fen": 1200,
        "visitor_price_fen": 1500,
    }
    jyj = got["市教育局食堂"]
    assert (jyj["operator"], jyj["self_operated"]) == ("市教育局", True)


def test_a_file_with_errors_is_refused_whole_with_every_line_reported(units, clock) -> None:  # noqa: ANN001
    before = current_version(units)
    with pytest.raises(DomainError) as err:
        load(units, "canteens_errors.csv", clock.now_ms())
    assert err.value.code == "import_rejected"
    problems = err.value.context["errors"]
    assert sorted({p["line"] for p in problems}) == [2, 3, 4, 5, 6]
    codes = {(p["line"], p["code"]) for p in problems}
    assert (2, "bad_amount") in codes and (4, "not_found") in codes
    assert any(p["line"] == 5 and "give 2 values" in p["detail"] for p in problems)
    assert units.execute("SELECT count(*) FROM canteens").fetchone()[0] == 0
    assert current_version(units) == before


def test_unknown_units_can_be_created_when_asked(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    report = load(conn, "canteens_seed_bom.csv", clock.now_ms(), create_units=True)
    assert report["units_created"] == ["市财政局", "市教育局", "市审计局", "市人民医院"]
    assert conn.execute("SELECT quarterly_standard_fen FROM units WHERE name = '市审计局'").fetchone()[0] == 0


def test_reimporting_updates_by_name_and_never_duplicates(units, clock) -> None:  # noqa: ANN001
    load(units, "canteens_seed_bom.csv", clock.now_ms())
    ids = {n: c["id"] for n, c in by_name(units).items()}
    changed = (FIXTURES / "canteens_seed_bom.csv").read_text("utf-8-sig").replace(",5,12,10,", ",6,13,10,")
    with write_txn(units):
        report = canteens.import_table(units, changed, clock.now_ms())
    # only the canteen whose prices changed is updated; the others are reported unchanged
    assert report["created"] == [] and report["updated"] == ["市财政局食堂"]
    assert len(report["unchanged"]) == 3
    [czj] = [c for c in report["changes"] if c["canteen"] == "市财政局食堂"]
    assert czj["changes"] == [
        {"field": "breakfast.price_fen", "from": 500, "to": 600},
        {"field": "lunch.price_fen", "from": 1200, "to": 1300},
    ]
    got = by_name(units)
    assert {n: c["id"] for n, c in got.items()} == ids
    assert got["市财政局食堂"]["config"]["meals"]["lunch"]["price_fen"] == 1300


def test_an_import_sends_every_canteen_to_terminals_in_one_delta(units, clock) -> None:  # noqa: ANN001
    before = current_version(units)
    load(units, "canteens_seed_bom.csv", clock.now_ms())
    deltas = deltas_since(units, before)
    assert len(deltas) == 1
    sent = {c["config"]["name"]: c["config"] for c in deltas[0].changes if c["kind"] == "canteen"}
    assert set(sent) == set(by_name(units))
    assert sent["市财政局食堂"]["meals"]["lunch"]["price_fen"] == 1200


def test_a_dry_run_reports_and_writes_nothing(units, clock) -> None:  # noqa: ANN001
    report = load(units, "canteens_seed_bom.csv", clock.now_ms(), dry_run=True)
    assert len(report["created"]) == 4
    assert units.execute("SELECT count(*) FROM canteens").fetchone()[0] == 0


def test_a_gbk_file_from_excel_is_read(units, clock) -> None:  # noqa: ANN001
    text = (FIXTURES / "canteens_seed_bom.csv").read_text("utf-8-sig")
    with write_txn(units):
        report = canteens.import_table(units, text.encode("gbk"), clock.now_ms())
    assert len(report["created"]) == 4


# -- shop items and the reference-price rule (第十条) --------------------------------------


@pytest.fixture
def canteen(units, clock) -> str:  # noqa: ANN001
    load(units, "canteens_seed_bom.csv", clock.now_ms())
    return by_name(units)["市财政局食堂"]["id"]


def test_a_shop_price_above_the_reference_price_is_refused(units, canteen: str, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(units):
        canteens.set_item(units, canteen, "water", "矿泉水", 250, 200, clock.now_ms())
    assert err.value.code == "price_above_reference"
    assert "¥2.50" in err.value.detail and "¥2.00" in err.value.detail
    assert "water" not in canteens.to_json(canteens.get(units, canteen))["config"]["items"]


def test_a_shop_price_equal_to_the_reference_price_is_allowed(units, canteen: str, clock) -> None:  # noqa: ANN001
    with write_txn(units):
        canteens.set_item(units, canteen, "water", "矿泉水", 200, 200, clock.now_ms())
    items = canteens.to_json(canteens.get(units, canteen))["config"]["items"]
    assert items["water"] == {"name": "矿泉水", "price_fen": 200, "reference_price_fen": 200}


def test_an_item_file_with_one_price_above_reference_imports_nothing(units, canteen: str, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(units):
        canteens.import_items(units, (FIXTURES / "items_above_reference.csv").read_bytes(), clock.now_ms())
    assert [(e["line"], e["code"]) for e in err.value.context["errors"]] == [(3, "price_above_reference")]
    assert canteens.to_json(canteens.get(units, canteen))["config"]["items"] == {}


def test_an_item_file_sets_items_terminals_can_sell(units, canteen: str, clock) -> None:  # noqa: ANN001
    from terminal.rules import CanteenRules

    with write_txn(units):
        report = canteens.import_items(units, (FIXTURES / "items.csv").read_bytes(), clock.now_ms())
    assert report == {"items": 2, "canteens": [canteen]}
    change = deltas_since(units, current_version(units) - 1)[0].changes[0]
    rules = CanteenRules.from_config(canteen, change["config"])
    assert rules.items["6901234567890"].price_fen == 350
    assert rules.items["6901234567890"].reference_price_fen == 400


def test_a_terminal_refuses_to_sell_an_item_priced_above_reference() -> None:
    """Defence in depth: even a config that slipped past the server cannot sell above it."""
    from terminal.authorize import TapRequest, price
    from terminal.rules import CanteenRules
    from terminal.store import CardState

    rules = CanteenRules.from_config(
        "C1", {"unit_id": "U01", "items": {"w": {"name": "水", "price_fen": 250, "reference_price_fen": 200}}}
    )
    card = CardState("K", "active", "H", "U01", 1000, 0, False, 0, 0, 0)
    assert (
        price(TapRequest("K", kind="shop", items=(("w", 1),)), card, rules, 0).reason
        == "price_above_reference"
    )


def test_removing_an_unknown_item_is_refused(units, canteen: str, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(units):
        canteens.remove_item(units, canteen, "nothing", clock.now_ms())
    assert err.value.code == "unknown_item"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"meals": {"lunch": {"start": "13:00", "end": "12:00", "price_fen": 1000}}}, "not before"),
        ({"meals": {"brunch": {"start": "10:00", "end": "11:00", "price_fen": 1000}}}, "brunch"),
        ({"meals": {"lunch": {"start": "08:30", "end": "13:00", "price_fen": 1000}}}, "overlap"),
        ({"meals": {"lunch": {"start": "11:30", "end": "13:00", "price_fen": 0}}}, "positive"),
        ({"meals": {"lunch": {"start": "11:30", "end": "13:00", "price_fen": 12.5}}}, "positive"),
        ({"meal_limit": 0}, "meal_limit"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_rules_are_refused_and_nothing_changes(
    units, canteen: str, clock, change: dict, fragment: str
) -> None:  # noqa: ANN001
    before = canteens.get(units, canteen)["config_json"]
    with pytest.raises(DomainError) as err, write_txn(units):
        canteens.update(units, canteen, clock.now_ms(), config=change)
    assert err.value.code == "invalid_input"
    assert fragment in err.value.detail
    assert canteens.get(units, canteen)["config_json"] == before


@pytest.mark.parametrize("area", [float("nan"), float("inf"), -1.0, True, "200"])
def test_a_dining_area_that_is_not_a_finite_number_is_refused(units, canteen: str, clock, area) -> None:  # noqa: ANN001
    before = canteens.get(units, canteen)["dining_area_m2"]
    with pytest.raises(DomainError) as err, write_txn(units):
        canteens.update(units, canteen, clock.now_ms(), dining_area_m2=area)
    assert err.value.code == "invalid_input" and "dining_area_m2" in err.value.detail
    assert canteens.get(units, canteen)["dining_area_m2"] == before


def test_rule_changes_merge_and_reach_terminals(units, canteen: str, clock) -> None:  # noqa: ANN001
    v = current_version(units)
    with write_txn(units):
        canteens.update(
            units,
            canteen,
            clock.now_ms(),
            operator="湘味餐饮有限公司",
            config={
                "meals": {
                    "dinner": None,
                    "lunch": {"start": "11:00", "end": "13:00", "price_fen": 1300, "visitor_price_fen": 1600},
                }
            },
        )
    config = json.loads(canteens.get(units, canteen)["config_json"])
    assert set(config["meals"]) == {"breakfast", "lunch"}
    [change] = deltas_since(units, v)[0].changes
    assert change["config"]["meals"]["lunch"]["visitor_price_fen"] == 1600


def test_the_directory_lists_where_to_eat_when_and_for_how_much(units, clock) -> None:  # noqa: ANN001
    load(units, "canteens_seed_bom.csv", clock.now_ms())
    entries = {e["name"]: e for e in canteens.directory(units)}
    czj = entries["市财政局食堂"]
    assert (czj["unit"], czj["location"], czj["contact"], czj["phone"]) == (
        "市财政局",
        "市财经大楼1楼",
        "王芳",
        "0731-28680001",
    )
    assert [(m["period_zh"], m["start"], m["end"], m["price"]) for m in czj["meals"]] == [
        ("早餐", "07:00", "09:00", "¥5.00"),
        ("中餐", "11:30", "13:30", "¥12.00"),
        ("晚餐", "17:30", "19:30", "¥10.00"),
    ]


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("单位名称", "unit"),
        ("\ufeff单位名称", "unit"),
        ("单位", "unit"),
        ("食堂数量(个)", "count"),
        ("食堂 数量 （个）", "count"),
        ("食堂数量", "count"),
        ("服务员人数(人)", "service_staff"),
        ("服务员 人数 (人)", "service_staff"),
        ("食堂容量(人)", "seats"),
        ("食堂\n容量", "seats"),
        ("就餐面积(平方)", "area"),
        ("就餐面 积（平 方）", "area"),
        ("就餐面积(㎡)", "area"),
        ("就餐面积平方米", "area"),
        ("早餐", "price_breakfast"),
        ("早餐(元/餐)", "price_breakfast"),
        ("餐位标准(元/餐)早餐", "price_breakfast"),
        ("餐位标准-早餐", "price_breakfast"),
        ("中餐（元/餐）", "price_lunch"),
        ("午餐", "price_lunch"),
        ("晚餐 (元/餐)", "price_dinner"),
        ("食堂地点", "location"),
        ("地址", "location"),
        ("联系人", "contact"),
        ("联系电话", "phone"),
        ("电话", "phone"),
        ("备注", "notes"),
        ("经营方式", "mode"),
        ("中餐时间", "time_lunch"),
        ("午餐访客价", "visitor_lunch"),
    ],
)
def test_the_header_spellings_a_clerk_would_type_are_understood(header: str, key: str) -> None:
    from server.infra.csvinput import normalize_header
    from server.registry.seed_table import ALIASES

    assert ALIASES.get(normalize_header(header)) == key
