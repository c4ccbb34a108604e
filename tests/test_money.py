"""Money helpers: the one rounding rule, the one formatter, the one yuan parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import DomainError
from shared.money import format_fen, parse_yuan, round_half_up_div


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [
        (505, 1000, 1),
        (504, 1000, 1),
        (499, 1000, 0),
        (500, 1000, 1),
        (1500, 1000, 2),
        (0, 1000, 0),
        (-505, 1000, -1),
    ],
)
def test_half_up_rounding(num: int, den: int, expected: int) -> None:
    assert round_half_up_div(num, den) == expected


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6))
def test_half_up_is_within_half_a_unit(num: int, den: int) -> None:
    q = round_half_up_div(num, den)
    assert abs(q * den - num) * 2 <= den


@pytest.mark.parametrize(
    ("fen", "text"), [(1250, "¥12.50"), (5, "¥0.05"), (0, "¥0.00"), (-1999, "-¥19.99"), (100000, "¥1000.00")]
)
def test_amounts_are_shown_as_yuan(fen: int, text: str) -> None:
    assert format_fen(fen) == text


@pytest.mark.parametrize(
    ("value", "fen"), [("12", 1200), ("12.5", 1250), ("12.50", 1250), (3.5, 350), (300, 30000), ("0.01", 1)]
)
def test_yuan_with_up_to_two_decimals_parses(value: object, fen: int) -> None:
    assert parse_yuan(value) == fen


@pytest.mark.parametrize("value", ["12.505", 0.001, "abc", "", True, None, "1e3"])
def test_finer_than_a_fen_or_garbage_is_refused(value: object) -> None:
    with pytest.raises(DomainError) as err:
        parse_yuan(value)
    assert err.value.code == "bad_amount"


@given(st.integers(-(10**9), 10**9))
def test_format_then_parse_round_trips(fen: int) -> None:
    assert parse_yuan(format_fen(fen).replace("¥", "")) == fen
