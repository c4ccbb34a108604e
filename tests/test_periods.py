"""Quarters, years and the allocation deadline, in Beijing time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.books.periods import Quarter, day_bounds_ms, day_of_ms, year_cutoff_ms
from shared.clock import ms_from_china
from shared.errors import DomainError


def test_a_quarter_runs_from_midnight_to_midnight_beijing_time() -> None:
    q = Quarter.parse("2026Q1")
    assert q.start_ms == ms_from_china("2026-01-01T00:00")
    assert q.end_ms == ms_from_china("2026-04-01T00:00")
    assert Quarter.of_ms(ms_from_china("2025-12-31T23:59:59")) == Quarter(2025, 4)
    assert Quarter.of_ms(ms_from_china("2026-01-01T00:00")) == q  # 2025-12-31 16:00 UTC


def test_allocation_is_late_from_midnight_after_the_tenth() -> None:
    q = Quarter.parse("2026Q3")
    assert q.allocation_due_ms == ms_from_china("2026-07-11T00:00")


def test_year_cutoff_is_new_year_midnight() -> None:
    assert year_cutoff_ms(2026) == ms_from_china("2027-01-01T00:00")


@pytest.mark.parametrize("bad", ["2026Q5", "26Q1", "2026-Q1", "", "Q1"])
def test_bad_quarter_names_are_refused(bad: str) -> None:
    with pytest.raises(DomainError):
        Quarter.parse(bad)


@given(st.integers(2000, 2100), st.integers(1, 4))
def test_quarters_tile_time(year: int, q: int) -> None:
    quarter = Quarter(year, q)
    assert quarter.next().start_ms == quarter.end_ms
    assert quarter.next().prev() == quarter
    assert Quarter.of_ms(quarter.start_ms) == quarter
    assert Quarter.of_ms(quarter.end_ms - 1) == quarter
    assert Quarter.parse(str(quarter)) == quarter


def test_day_bounds_are_beijing_days() -> None:
    start, end = day_bounds_ms("2026-01-06")
    assert day_of_ms(start) == "2026-01-06" and day_of_ms(end) == "2026-01-07"
