"""The authorization rules, one example each: prices, meal limits, balances, offline limits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.clock import ms_from_china
from terminal.authorize import CardState, LinkState, TapRequest, authorize
from terminal.rules import HOUR_MS, MINUTE_MS, CanteenRules, RiskLimits

NOON = ms_from_china("2026-01-06T12:00")
CONFIG = {
    "unit_id": "U01",
    "meals": {
        "breakfast": {"start": "07:00", "end": "09:00", "price_fen": 500},
        "lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200, "visitor_price_fen": 1500},
    },
    "items": {
        "tissue": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400},
        "dear": {"name": "高价", "price_fen": 900, "reference_price_fen": 800},
    },
}
RULES = CanteenRules.from_config("C01", CONFIG)
LIMITS = RiskLimits()
ONLINE = LinkState(online=True, last_sync_ms=NOON)
OFFLINE = LinkState(
    online=False, offline_since_ms=NOON - HOUR_MS, last_sync_ms=NOON - HOUR_MS, clock_offset_ms=200
)


def card(**kw: object) -> CardState:
    base = dict(
        card_id="C1",
        card_status="active",
        holder_id="H1",
        unit_id="U01",
        subsidy_fen=3000,
        self_fen=500,
        blocked=False,
        version=1,
        unconfirmed_fen=0,
        unconfirmed_count=0,
    )
    base.update(kw)
    return CardState(**base)  # type: ignore[arg-type]


MEAL = TapRequest("C1")


def decide(
    request: TapRequest = MEAL,
    state: CardState | None = None,
    link: LinkState = ONLINE,
    now: int = NOON,
    meals: int = 0,
    limits: RiskLimits = LIMITS,
):  # noqa: ANN201
    return authorize(request, card() if state is None else state, RULES, limits, link, now, meals)


def test_own_staff_pay_the_staff_price_for_the_current_meal() -> None:
    d = decide()
    assert d.approved and (d.amount_fen, d.meal_period, d.visitor) == (1200, "lunch", False)


def test_visitors_pay_the_visitor_price_where_the_unit_set_one() -> None:
    d = decide(state=card(unit_id="U02"))
    assert d.approved and (d.amount_fen, d.visitor) == (1500, True)


def test_visitors_pay_the_staff_price_where_no_visitor_price_is_set() -> None:
    d = decide(state=card(unit_id="U02"), now=ms_from_china("2026-01-06T08:00"))
    assert d.approved and (d.amount_fen, d.meal_period, d.visitor) == (500, "breakfast", True)


def test_no_meal_outside_meal_hours() -> None:
    assert decide(now=ms_from_china("2026-01-06T10:00")).reason == "outside_meal_hours"


def test_one_meal_per_card_per_period_by_default() -> None:
    assert decide(meals=1).reason == "meal_limit_reached"


def test_a_canteen_may_allow_more_meals_per_period() -> None:
    rules = CanteenRules.from_config("C01", {**CONFIG, "meal_limit": 2})
    assert authorize(TapRequest("C1"), card(), rules, LIMITS, ONLINE, NOON, 1).approved


def test_subsidy_is_spent_before_the_self_purse() -> None:
    d = decide(state=card(subsidy_fen=1000, self_fen=500))
    assert (d.subsidy_fen, d.self_fen) == (1000, 200)


def test_unconfirmed_sales_have_already_used_the_subsidy() -> None:
    d = decide(state=card(subsidy_fen=1000, self_fen=2000, unconfirmed_fen=800, unconfirmed_count=1))
    assert (d.subsidy_fen, d.self_fen) == (200, 1000)


def test_insufficient_balance_counts_this_terminals_unconfirmed_sales() -> None:
    assert decide(state=card(subsidy_fen=1500, self_fen=0)).approved
    assert (
        decide(state=card(subsidy_fen=1500, self_fen=0, unconfirmed_fen=400, unconfirmed_count=1)).reason
        == "insufficient_balance"
    )


def test_a_negative_purse_is_a_debt() -> None:
    assert decide(state=card(subsidy_fen=2000, self_fen=-900)).reason == "insufficient_balance"


@pytest.mark.parametrize("state", [card(card_status="lost"), card(card_status="retired"), card(blocked=True)])
def test_a_blocked_or_lost_card_is_declined(state: CardState) -> None:
    assert decide(state=state).reason == "card_blocked"


def test_an_unknown_card_is_declined() -> None:
    assert authorize(TapRequest("X"), None, RULES, LIMITS, ONLINE, NOON).reason == "card_unknown"


def test_a_shop_basket_is_priced_from_the_canteens_items() -> None:
    d = decide(TapRequest("C1", kind="shop", items=(("tissue", 2),)))
    assert d.approved and d.amount_fen == 700 and d.items[0].unit_price_fen == 350 and d.meal_period is None


def test_an_item_dearer_than_the_reference_price_cannot_be_sold() -> None:
    assert "dear" not in RULES.items and any("dear" in p for p in RULES.problems)
    assert decide(TapRequest("C1", kind="shop", items=(("dear", 1),))).reason == "price_above_reference"
    assert decide(TapRequest("C1", kind="shop", items=(("nosuch", 1),))).reason == "unknown_item"


def test_the_cashier_may_type_an_amount_in_shop_mode() -> None:
    d = decide(TapRequest("C1", kind="shop", amount_fen=1234), now=ms_from_china("2026-01-06T16:00"))
    assert d.approved and d.amount_fen == 1234


@pytest.mark.parametrize("amount", [0, -5])
def test_a_typed_amount_must_be_positive(amount: int) -> None:
    assert decide(TapRequest("C1", kind="shop", amount_fen=amount)).reason == "bad_amount"


def test_a_shop_tap_with_nothing_to_pay_for_says_the_basket_is_empty() -> None:
    assert decide(TapRequest("C1", kind="shop")).reason == "basket_empty"


def test_a_canteen_can_forbid_typed_amounts() -> None:
    rules = CanteenRules.from_config("C01", {**CONFIG, "allow_typed_amount": False})
    assert (
        authorize(TapRequest("C1", kind="shop", amount_fen=100), card(), rules, LIMITS, ONLINE, NOON).reason
        == "typed_amount_not_allowed"
    )


def test_a_typed_amount_above_the_canteens_cap_is_refused() -> None:
    rules = CanteenRules.from_config("C01", {**CONFIG, "max_typed_amount_fen": 2000})
    for amount, reason in ((2000, None), (2001, "typed_amount_above_cap")):
        d = authorize(TapRequest("C1", kind="shop", amount_fen=amount), card(), rules, LIMITS, ONLINE, NOON)
        assert d.reason == reason


def test_a_basket_is_refused_when_the_price_list_is_stale_but_a_meal_is_not() -> None:
    limits = replace(LIMITS, max_price_age_ms=6 * HOUR_MS)
    old = replace(OFFLINE, last_sync_ms=NOON - 7 * HOUR_MS)
    basket = TapRequest("C1", kind="shop", items=(("tissue", 1),))
    assert authorize(basket, card(), RULES, limits, old, NOON).reason == "price_list_stale"
    fresh = replace(OFFLINE, last_sync_ms=NOON - 5 * HOUR_MS)
    assert authorize(basket, card(), RULES, limits, fresh, NOON).approved
    assert authorize(TapRequest("C1"), card(), RULES, limits, old, NOON).approved  # lunch


def test_a_basket_sale_carries_the_reference_prices_in_force() -> None:
    d = decide(TapRequest("C1", kind="shop", items=(("tissue", 2),)))
    assert [(i.sku, i.qty, i.unit_price_fen, i.reference_price_fen) for i in d.items] == [
        ("tissue", 2, 350, RULES.items["tissue"].reference_price_fen)
    ]


def test_no_sale_above_the_per_sale_limit() -> None:
    limits = RiskLimits(max_sale_fen=1000)
    assert decide(limits=limits).reason == "pin_required"  # above the no-PIN limit


def test_offline_a_card_may_not_exceed_its_offline_total() -> None:
    limits = RiskLimits(max_offline_total_fen=2000)
    state = card(unconfirmed_fen=900, unconfirmed_count=1)
    assert decide(state=state, link=OFFLINE, limits=limits).reason == "offline_limit_reached"
    assert decide(state=state, link=ONLINE, limits=limits).approved


def test_offline_a_card_may_not_exceed_its_consecutive_offline_sales() -> None:
    limits = RiskLimits(max_offline_sales=2)
    state = card(unconfirmed_fen=200, unconfirmed_count=2)
    assert (
        decide(TapRequest("C1", kind="shop", amount_fen=100), state=state, link=OFFLINE, limits=limits).reason
        == "offline_limit_reached"
    )


def test_offline_the_allowance_lets_a_card_go_that_far_below_its_balance() -> None:
    state = card(subsidy_fen=1000, self_fen=0)
    assert decide(state=state, link=OFFLINE).reason == "insufficient_balance"
    d = decide(state=state, link=OFFLINE, limits=RiskLimits(offline_allowance_fen=200))
    assert d.approved and (d.subsidy_fen, d.self_fen) == (1000, 200)
    assert (
        decide(state=state, link=ONLINE, limits=RiskLimits(offline_allowance_fen=200)).reason
        == "insufficient_balance"
    )


def test_a_terminal_offline_too_long_stops_selling() -> None:
    link = replace(OFFLINE, offline_since_ms=NOON - 25 * HOUR_MS)
    assert decide(link=link).reason == "terminal_offline_too_long"


def test_a_deny_list_too_old_stops_offline_sales() -> None:
    assert decide(link=replace(OFFLINE, last_sync_ms=NOON - 73 * HOUR_MS)).reason == "denylist_too_old"
    assert decide(link=replace(OFFLINE, last_sync_ms=None)).reason == "denylist_too_old"


def test_too_many_unsent_sales_stops_selling() -> None:
    assert decide(link=replace(OFFLINE, unsent_sales=20_000)).reason == "offline_limit_reached"


def test_a_clock_far_from_the_servers_refuses_offline_sales() -> None:
    assert decide(link=replace(OFFLINE, clock_offset_ms=6 * MINUTE_MS)).reason == "clock_skew"
    assert decide(link=replace(OFFLINE, clock_offset_ms=-6 * MINUTE_MS)).reason == "clock_skew"
    assert decide(link=replace(ONLINE, clock_offset_ms=6 * MINUTE_MS)).approved


def test_a_clock_that_went_backwards_refuses_offline_sales() -> None:
    link = replace(OFFLINE, clock_offset_ms=None, clock_floor_ms=NOON + HOUR_MS)
    assert decide(link=link).reason == "clock_skew"


def test_every_decline_has_a_chinese_message() -> None:
    for d in (
        decide(meals=1),
        decide(state=card(blocked=True)),
        decide(link=replace(OFFLINE, last_sync_ms=None)),
    ):
        assert not d.approved and d.message("zh") != d.reason and d.message("en") != d.reason


def test_bad_risk_values_keep_the_safe_defaults() -> None:
    limits = RiskLimits.from_config(
        {"max_sale_fen": 500, "max_offline_sales": -1}, {"offline_allowance_fen": "lots"}
    )
    assert limits == RiskLimits(max_sale_fen=500)


def test_a_canteens_risk_limits_override_the_city_settings() -> None:
    limits = RiskLimits.from_config({"max_sale_fen": 500, "max_offline_sales": 3}, {"max_sale_fen": 800})
    assert (limits.max_sale_fen, limits.max_offline_sales) == (800, 3)


def test_malformed_meal_periods_are_left_out_and_reported() -> None:
    rules = CanteenRules.from_config(
        "C01",
        {
            "meals": {
                "lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200},
                "dinner": {"start": "19:00", "end": "17:00", "price_fen": 1000},
                "breakfast": {"start": "12:00", "end": "12:30", "price_fen": 300},
            }
        },
    )
    assert [p.name for p in rules.meals] == ["lunch"] and len(rules.problems) == 2
