"""The cashier's basket, one rule each (issue 13): what a scan or a typed code adds, what is
refused and why, void, quantities, typed amounts, and that a basket always charges exactly
the sum of its lines at the list prices."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.barcode import with_check_digit
from shared.clock import ms_from_china
from shared.errors import DomainError
from terminal import basket as b
from terminal.authorize import CardState, LinkState, TapRequest, authorize
from terminal.basket import Basket
from terminal.rules import HOUR_MS, CanteenRules, RiskLimits

NOW = ms_from_china("2026-01-06T15:00")
WATER, TISSUE, DEAR = "6901234567892", with_check_digit("690000000001"), with_check_digit("690000000002")
UPC = "036000291452"
CONFIG = {
    "unit_id": "U01",
    "items": {
        "water": {"name": "矿泉水", "price_fen": 200, "reference_price_fen": 250, "barcodes": [WATER, UPC]},
        "1001": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400, "barcodes": [TISSUE]},
        "dear": {"name": "高价商品", "price_fen": 900, "reference_price_fen": 800, "barcodes": [DEAR]},
    },
    "max_typed_amount_fen": 5000,
}
RULES = CanteenRules.from_config("C01", CONFIG)
LIMITS = RiskLimits(max_price_age_ms=6 * HOUR_MS)


def add(basket: Basket, code: str, last_sync_ms: int | None = NOW, rules: CanteenRules = RULES) -> Basket:
    return b.add(basket, rules, LIMITS, last_sync_ms, NOW, code)


def refusal(action) -> str:  # noqa: ANN001
    with pytest.raises(DomainError) as exc:
        action()
    return exc.value.code


def test_a_scanned_barcode_adds_its_item_at_the_list_price_with_its_chinese_name() -> None:
    basket = add(add(Basket(), WATER), UPC)  # a UPC-A finds the same item as its EAN-13
    assert [(line.name, line.qty, line.unit_price_fen) for line in basket.lines] == [
        ("矿泉水", 1, 200),
        ("矿泉水", 1, 200),
    ]
    assert (basket.pieces, basket.total_fen, basket.items()) == (2, 400, (("water", 2),))


def test_a_code_typed_on_the_keypad_is_an_item_code_or_a_barcode() -> None:
    assert add(Basket(), "1001").last.name == "抽纸"
    assert add(Basket(), TISSUE).last.sku == "1001"


def test_what_is_not_in_the_cached_price_list_is_refused() -> None:
    assert refusal(lambda: add(Basket(), with_check_digit("690000000009"))) == "barcode_unknown"
    assert refusal(lambda: add(Basket(), "4242")) == "unknown_item"


def test_an_item_dearer_than_its_reference_is_refused_by_code_and_by_barcode() -> None:
    assert "dear" not in RULES.items
    assert refusal(lambda: add(Basket(), "dear")) == "price_above_reference"
    assert refusal(lambda: add(Basket(), DEAR)) == "price_above_reference"


def test_a_stale_price_list_sells_nothing_from_it() -> None:
    assert refusal(lambda: add(Basket(), WATER, last_sync_ms=NOW - 7 * HOUR_MS)) == "price_list_stale"
    assert refusal(lambda: add(Basket(), WATER, last_sync_ms=None)) == "price_list_stale"
    assert add(Basket(), WATER, last_sync_ms=NOW - 5 * HOUR_MS).total_fen == 200


def test_the_quantity_applies_to_the_last_line_within_bounds() -> None:
    basket = b.set_quantity(add(add(Basket(), WATER), "1001"), 3)
    assert [line.qty for line in basket.lines] == [1, 3] and basket.total_fen == 200 + 1050
    assert refusal(lambda: b.set_quantity(basket, 0)) == "basket_bad_quantity"
    assert refusal(lambda: b.set_quantity(basket, 1000)) == "basket_bad_quantity"
    assert refusal(lambda: b.set_quantity(Basket(), 2)) == "basket_empty"


def test_void_removes_exactly_the_last_line() -> None:
    basket = add(add(add(Basket(), WATER), "1001"), WATER)
    basket, voided = b.void_last(basket)
    assert voided is not None and voided.sku == "water"
    assert basket.items() == (("water", 1), ("1001", 1)) and basket.total_fen == 550
    assert refusal(lambda: b.void_last(Basket())) == "basket_empty"


def test_a_typed_amount_only_where_allowed_up_to_the_cap_and_never_with_items() -> None:
    assert b.type_amount(Basket(), RULES, 5000).total_fen == 5000
    assert refusal(lambda: b.type_amount(Basket(), RULES, 5001)) == "typed_amount_above_cap"
    forbidden = CanteenRules.from_config("C01", {**CONFIG, "allow_typed_amount": False})
    assert refusal(lambda: b.type_amount(Basket(), forbidden, 100)) == "typed_amount_not_allowed"
    assert refusal(lambda: b.type_amount(add(Basket(), WATER), RULES, 100)) == "typed_amount_with_items"
    typed = b.type_amount(Basket(), RULES, 1250)
    assert refusal(lambda: add(typed, WATER)) == "typed_amount_with_items"
    assert b.void_last(typed)[0].empty


def test_an_empty_basket_cannot_be_paid_for() -> None:
    assert refusal(lambda: b.payable(Basket())) == "basket_empty"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([WATER, UPC, TISSUE, "1001", "water", DEAR, "nope"])),
        st.tuples(st.just("qty"), st.integers(-2, 1200)),
        st.tuples(st.just("void"), st.none()),
    ),
    max_size=40,
)


@given(ops)
def test_whatever_the_cashier_does_the_sale_charges_the_sum_of_the_lines_at_list_prices(steps) -> None:  # noqa: ANN001
    basket = Basket()
    for op, arg in steps:
        try:
            if op == "add":
                basket = add(basket, arg)
            elif op == "qty":
                basket = b.set_quantity(basket, arg)
            else:
                basket = b.void_last(basket)[0]
        except DomainError:
            pass  # refused: the basket is as it was
    assert basket.total_fen == sum(line.qty * line.unit_price_fen for line in basket.lines)
    if basket.empty:
        return
    card = CardState("C1", "active", "H1", "U01", 10**9, 0, False, 1, 0, 0)
    limits = RiskLimits(max_sale_fen=10**9)
    link = LinkState(online=True, last_sync_ms=NOW)
    d = authorize(TapRequest("C1", kind="shop", items=basket.items()), card, RULES, limits, link, NOW)
    assert d.approved and d.amount_fen == basket.total_fen
    assert all(i.unit_price_fen <= (i.reference_price_fen or 0) for i in d.items)  # 第十条
