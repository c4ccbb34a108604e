"""The simulated city: its generated data goes through the real imports, its day has the
shape the policy describes, and a small city's day — card, QR and face payments, an outage,
settlement and year-end clearing — keeps every fen: each approved sale applied once."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from hardware.camera import Frame, decode_image
from server.infra.auth import create_token
from server.infra.db import write_txn
from server.sales.faces import analyze_photo
from simulator.city.day import MEAL_WINDOWS, day_visits, minute_ms, working_days
from simulator.city.faces import LabelFaceEngine, label_of, photo_png
from simulator.city.render import consistent, render
from simulator.city.run import CityOptions, run_city
from simulator.city.world import canteen_table_csv, items_csv, plan_city, roster_csv


def test_every_unit_has_staff_and_units_without_a_canteen_eat_nearby() -> None:
    plan = plan_city(units=12, diners=300, canteens=4, seed=3)
    assert {d.unit for d in plan.diners} == {u.name for u in plan.units}
    canteen_units = {c.unit for c in plan.canteens}
    for d in plan.diners:
        if d.unit in canteen_units:
            assert plan.canteen(d.home).unit == d.unit
    homes = Counter((d.unit, d.home) for d in plan.diners if d.unit not in canteen_units)
    per_unit = Counter(unit for unit, _ in homes)
    assert max(per_unit.values()) <= 2  # one or two canteens nearby, not the whole city
    assert plan_city(units=12, diners=300, canteens=4, seed=3) == plan  # a seed makes the same city


def test_the_city_goes_in_through_the_real_imports(client, conn, clock) -> None:  # noqa: ANN001
    plan = plan_city(units=8, diners=200, canteens=3, seed=5)
    with write_txn(conn):
        token = create_token(conn, "admin", clock.now_ms())
    auth = {"Authorization": f"Bearer {token}"}
    for u in plan.units:
        assert (
            client.post(
                "/api/v1/units",
                json={"name": u.name, "quarterly_standard_fen": u.standard_yuan * 100},
                headers=auth,
            ).status_code
            == 201
        )
    csv_headers = {**auth, "Content-Type": "text/csv"}
    table = client.post("/api/v1/canteens/import", data=canteen_table_csv(plan).encode(), headers=csv_headers)
    assert table.status_code == 200, table.json
    assert sorted(table.json["created"]) == sorted(
        c.name for c in plan.canteens
    )  # 食堂数量 0 rows create none
    items = client.post("/api/v1/canteens/items/import", data=items_csv(plan).encode(), headers=csv_headers)
    assert items.status_code == 200, items.json
    roster = client.post("/api/v1/roster/import", data=roster_csv(plan).encode(), headers=csv_headers)
    assert roster.status_code == 200 and roster.json["new_holders"] == 200, roster.json
    directory = client.get("/api/v1/directory").json
    visitor = {c.name: c.lunch_visitor for c in plan.canteens}
    for entry in directory:
        lunch = next(m for m in entry["meals"] if m["period"] == "lunch")
        expected = int(visitor[entry["name"]]) * 100 if visitor[entry["name"]] else None
        assert lunch["visitor_price_fen"] == expected


def test_a_day_has_meals_in_their_hours_cross_unit_lunches_and_no_weekends() -> None:
    plan = plan_city(units=10, diners=400, canteens=4, seed=9)
    day = date(2026, 12, 30)
    visits = day_visits(plan, day, tills=2, rng=random.Random(1))
    assert visits == sorted(visits, key=lambda v: (v.at_ms, v.card))
    meals = [v for v in visits if v.kind == "meal"]
    for v in meals:
        start, end = MEAL_WINDOWS[v.period or ""]
        assert (
            minute_ms(day, start) <= v.at_ms < minute_ms(day, end) + 3 * 60_000
        )  # a second try comes 3 min later
    homes = {d.card: d.home for d in plan.diners}
    away = [v for v in meals if v.period == "lunch" and v.canteen != homes[v.card]]
    assert 0 < len(away) < len([v for v in meals if v.period == "lunch"]) / 2
    assert {v.kind for v in visits} == {"meal", "shop", "topup"}
    assert working_days(date(2027, 1, 3), 3) == [date(2026, 12, 30), date(2026, 12, 31), date(2027, 1, 1)]


def test_a_simulated_face_photo_is_enrolled_by_the_real_photo_code_and_matches_its_camera_label() -> None:
    png = photo_png("C000042")
    assert label_of(Frame(decode_image(png))) == "C000042"
    engine = LabelFaceEngine()
    photo = analyze_photo(engine, png)  # the server's enrollment path: decode, exactly one face, encode
    at_counter = engine.encode(Frame(None, "C000042"), engine.detect(Frame(None, "C000042"))[0])
    assert photo.encoding == at_counter.astype("<f4").tobytes()
    assert engine.detect(Frame(decode_image(photo_png("x")), None)) and not engine.detect(Frame(None, None))


@pytest.mark.broker
@pytest.mark.slow
def test_a_small_city_day_with_an_outage_keeps_every_fen(broker, tmp_path: Path) -> None:  # noqa: ANN001
    result = run_city(
        CityOptions(
            units=5,
            diners=150,
            canteens=2,
            days=1,
            terminals=2,
            seed=11,
            broker=broker,
            workdir=tmp_path / "city",
            terminal_prefix=tmp_path.name[-12:],
        )
    )
    assert consistent(result), result["mismatch_details"]
    day = result["days"][0]
    assert day["outage"] is not None and day["offline"] > 0  # the cut-off counter kept serving
    assert set(result["methods"]) == {"card", "qr", "face"}
    approved_fen = sum(m["amount_fen"] for m in result["methods"].values())
    assert result["settlement"]["2026Q4"]["gross_fen"] == approved_fen == day["amount_fen"]
    assert sum(c["count"] for c in result["matrix"]["cells"]) == result["approved"]
    assert result["clearing"]["year"] == 2026 and result["clearing"]["refund_fen"] > 0
    for key in ("approved", "applied", "pending", "duplicates_ignored", "ledger_sum_fen", "mismatches"):
        assert key in result  # the keys `canteen-sim demo --json` has always had
    text = render(result)
    assert "跨单位就餐矩阵" in text and "✔ 全部一致" in text
