"""The settlement and clearing maths: pure functions, checked by examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.books.settlement_rules import (
    Adjustment,
    attribute,
    fee_fen,
    pay_pct,
    settle,
    take_in_order,
    validate_bands,
    withholding_fen,
)
from shared.errors import DomainError

BANDS = validate_bands([[90, 100], [80, 98], [0, 95]])
fen = st.integers(0, 10**10)
pct = st.integers(0, 100)


def test_self_operated_canteen_pays_no_fee() -> None:
    assert fee_fen(1_000_000, self_operated=True) == 0
    assert settle(1_000_000, 100, [], self_operated=True).net_fen == 1_000_000


def test_fee_is_half_a_percent_rounded_half_up() -> None:
    assert fee_fen(10_000, False) == 50
    assert fee_fen(101, False) == 1  # 0.505 fen -> 1
    assert fee_fen(99, False) == 0  # 0.495 fen -> 0
    assert fee_fen(100, False) == 1  # 0.5 fen -> 1 (half up)


def test_withholding_follows_the_quality_bands() -> None:
    assert [pay_pct(s, BANDS) for s in (100, 90, 89, 80, 79, 0)] == [100, 100, 98, 98, 95, 95]
    assert withholding_fen(123_457, 98) == 2469  # 2469.14 -> 2469
    assert withholding_fen(150, 99) == 2  # 1.5 -> 2 (half up)


def test_an_unscored_canteen_and_default_bands_pay_in_full() -> None:
    assert pay_pct(None, BANDS) == 100
    assert pay_pct(10) == 100


def test_statement_example_from_the_rules() -> None:
    f = settle(1_000_000, 98, [Adjustment(5_000, 95)], self_operated=False)
    assert (f.withheld_gross_fen, f.withheld_adjustments) == (20_000, (250,))
    assert f.settlement_fen == 1_005_000 - 20_250
    assert f.fee_fen == 4924  # 0.5% of 984,750 = 4923.75 -> 4924
    assert f.net_fen == 984_750 - 4924


@pytest.mark.parametrize(
    "bad",
    [[], [[90, 100]], [[0, 100], [0, 95]], [[0, 101]], [[90, 95], [0, 100]], [[0, 100.0]], "x", [[0, True]]],
)
def test_bad_quality_bands_are_refused(bad: object) -> None:
    with pytest.raises(DomainError) as err:
        validate_bands(bad)
    assert err.value.code == "invalid_input"


@given(fen, pct, st.lists(st.tuples(fen, pct), max_size=5), st.booleans())
def test_gross_always_equals_withheld_plus_fee_plus_net(gross: int, p: int, adj: list, self_op: bool) -> None:
    f = settle(gross, p, [Adjustment(a, q) for a, q in adj], self_op)
    assert gross + f.adjustments_fen == f.withheld_fen + f.fee_fen + f.net_fen
    assert f.settlement_fen == f.fee_fen + f.net_fen
    assert min(f.withheld_fen, f.fee_fen, f.net_fen) >= 0
    assert f.fee_fen == 0 or not self_op


@given(fen, pct)
def test_withholding_is_the_exact_share_rounded_half_up(amount: int, p: int) -> None:
    w = withholding_fen(amount, p)
    exact_times_100 = amount * (100 - p)
    assert abs(w * 100 - exact_times_100) <= 50
    if abs(w * 100 - exact_times_100) == 50:
        assert w * 100 > exact_times_100  # a tie rounds up


@given(fen)
def test_fee_is_never_more_than_half_a_percent_plus_half_a_fen(amount: int) -> None:
    f = fee_fen(amount, False)
    assert abs(f * 1000 - amount * 5) <= 500


@given(fen, st.lists(st.tuples(st.sampled_from(["U1", "U2", "U3"]), st.integers(1, 10**6)), max_size=6))
def test_attribution_gives_back_exactly_the_cleared_amount(amount: int, credits: list) -> None:
    parts = attribute(amount, credits, "U9")
    assert sum(p for _, p in parts) == amount
    assert all(p > 0 for _, p in parts)
    assert len({u for u, _ in parts}) == len(parts)


def test_a_mover_refunds_newest_allocations_first() -> None:
    # Q1,Q2 paid by U1, Q3,Q4 by U2 (newest first); 250 left of 4 x 100
    assert attribute(250, [("U2", 100), ("U2", 100), ("U1", 100), ("U1", 100)], "U2") == [
        ("U2", 200),
        ("U1", 50),
    ]


@given(fen, st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**6)), max_size=5))
def test_take_in_order_never_takes_more_than_asked_or_available(amount: int, avail: list) -> None:
    parts, left = take_in_order(amount, avail)
    assert sum(p for _, p in parts) + left == amount
    assert left >= 0
    assert left == 0 or sum(p for _, p in parts) == sum(a for _, a in avail)
