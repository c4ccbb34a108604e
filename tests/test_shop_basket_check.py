"""The server checks a shop sale against the prices in force when it was made (issue 13):
each item at a list price *with the reference price in force beside it*, never above that
reference (第十条), and a typed amount only where the canteen allows one, within its cap.
What fails is quarantined — no purse moves — never applied silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.infra.db import write_txn
from server.registry import canteens
from shared.protocol import Item
from tests.test_cli_money import home, run  # noqa: F401  (the fixture)
from tests.test_quarantine import City


@pytest.fixture
def city(tmp_path: Path) -> City:
    return City(tmp_path / "server.db")


def statuses(results: list) -> list[tuple[str, str | None]]:  # noqa: ANN001
    return [(r.status, r.reason) for r in results]


def test_a_basket_with_the_reference_prices_in_force_is_applied_any_other_is_held(city: City) -> None:
    card = city.staff()
    before = city.balances()
    results = city.send(
        city.new_sale(card, 900, items=(Item("tissue", 2, 350, 400), Item("water", 1, 200, 200))),
        city.new_sale(card, 350, items=(Item("tissue", 1, 350, 500),)),  # a reference never in force
        city.new_sale(card, 350, items=(Item("tissue", 1, 350),)),  # a terminal from before references
    )
    assert statuses(results) == [("applied", None), ("quarantined", "sale_price_mismatch"), ("applied", None)]
    assert sum(before.values()) == sum(city.balances().values()) == 0
    held = city.conn.execute("SELECT detail FROM quarantined_sales").fetchone()[0]
    assert "reference 500" in held and "350 (reference 400)" in held


def test_an_item_sold_above_the_reference_it_names_is_held(city: City) -> None:
    card = city.staff()  # water ¥2.00, reference ¥2.00 in force
    [r] = city.send(city.new_sale(card, 200, items=(Item("water", 1, 200, 150),)))
    assert (r.status, r.reason) == ("quarantined", "sale_price_mismatch")


def test_a_basket_priced_before_a_price_change_still_applies(city: City) -> None:
    card = city.staff()
    priced_at = city.clock.now_ms()
    city.clock.advance_ms(60_000)
    with write_txn(city.conn):
        canteens.set_item(city.conn, "C01", "tissue", "抽纸", 380, 450, city.clock.now_ms())
    city.clock.advance_ms(60_000)
    old, new, mixed = city.send(
        city.new_sale(card, 350, items=(Item("tissue", 1, 350, 400),), at_ms=priced_at),
        city.new_sale(card, 380, items=(Item("tissue", 1, 380, 450),)),
        # new price, old reference: never in force
        city.new_sale(card, 380, items=(Item("tissue", 1, 380, 400),)),
    )
    assert statuses([old, new, mixed]) == [
        ("applied", None),
        ("applied", None),
        ("quarantined", "sale_price_mismatch"),
    ]


def test_a_typed_amount_only_where_the_canteen_allows_one_within_its_cap(city: City) -> None:
    card = city.staff()
    lag_ms = 4 * 24 * 3_600_000  # longer than a terminal may sell on rules it has not refreshed
    with write_txn(city.conn):
        canteens.update(city.conn, "C01", city.clock.now_ms(), config={"max_typed_amount_fen": 2_000})
    # a terminal's rules may lag: a sale made just after the change may still be uncapped ...
    [lagging] = city.send(city.new_sale(card, 2_001))
    assert lagging.status == "applied"
    # ... one made when only the capped config could have been in force may not
    city.clock.advance_ms(lag_ms)
    within, above = city.send(city.new_sale(card, 2_000), city.new_sale(card, 2_001))
    assert statuses([within, above]) == [("applied", None), ("quarantined", "sale_typed_amount")]
    with write_txn(city.conn):
        canteens.update(city.conn, "C01", city.clock.now_ms(), config={"allow_typed_amount": False})
    city.clock.advance_ms(lag_ms)
    [forbidden] = city.send(city.new_sale(card, 500))
    assert (forbidden.status, forbidden.reason) == ("quarantined", "sale_typed_amount")
    assert (
        city.conn.execute("SELECT count(*) FROM quarantined_sales WHERE state = 'pending'").fetchone()[0] == 2
    )


def test_the_clerk_sets_the_typed_amount_rule_and_its_cap(home: Path) -> None:  # noqa: F811
    def config() -> dict:
        code, out = run(home, "canteen", "show", "C01")
        assert code == 0, out
        return json.loads(out)["config"]

    assert "allow_typed_amount" not in config()  # allowed unless a canteen says otherwise
    assert run(home, "canteen", "set", "C01", "--typed-amount-cap", "50")[0] == 0
    assert config()["max_typed_amount_fen"] == 5000
    assert run(home, "canteen", "set", "C01", "--no-typed-amount")[0] == 0
    assert (config()["allow_typed_amount"], config()["max_typed_amount_fen"]) == (False, 5000)
    assert run(home, "canteen", "set", "C01", "--typed-amount", "--typed-amount-cap", "none")[0] == 0
    assert config()["allow_typed_amount"] is True and "max_typed_amount_fen" not in config()
    code, out = run(home, "canteen", "set", "C01", "--typed-amount-cap", "-5")
    assert code == 2 and "amount_not_positive" in out
