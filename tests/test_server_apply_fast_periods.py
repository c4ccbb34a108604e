"""A sale dated at or after the latest clearing's cutoff is decided on the closed periods'
heads (:meth:`server.sales.apply.ClosedPeriods.from_heads`, read with the ingest's terminals
as :data:`server.sales.apply.PERIOD_HEADS`): the same verdicts as the periods read in full."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from server.sales.apply import PERIOD_HEADS, ClosedPeriods

_MS = st.integers(0, 10_000)


def _db(ends: list[int], cutoffs: list[int]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE settlement_periods (quarter TEXT PRIMARY KEY, end_ms INTEGER NOT NULL)")
    conn.execute("CREATE TABLE clearings (year INTEGER PRIMARY KEY, cutoff_ms INTEGER NOT NULL)")
    conn.executemany(
        "INSERT INTO settlement_periods VALUES (?, ?)", [(f"Q{i}", e) for i, e in enumerate(ends)]
    )
    # a later year's cutoff is later (ClosedPeriods.load reads them in cutoff order)
    conn.executemany(
        "INSERT INTO clearings VALUES (?, ?)", [(2020 + i, c) for i, c in enumerate(sorted(set(cutoffs)))]
    )
    return conn


@given(st.lists(_MS, max_size=4), st.lists(_MS, max_size=4), st.lists(_MS, min_size=1, max_size=8))
@settings(max_examples=400)
def test_the_heads_decide_as_the_full_read_does(
    ends: list[int], cutoffs: list[int], sales: list[int]
) -> None:
    conn = _db(ends, cutoffs)
    full = ClosedPeriods.load(conn)
    heads = conn.execute(f"SELECT {', '.join(PERIOD_HEADS)}").fetchone()
    assert heads == (max(ends, default=None), max(cutoffs, default=None))
    for at in [*sales, *cutoffs, *ends]:
        recent = ClosedPeriods.from_heads(*heads, at)
        if recent is None:  # only a sale a clearing may take is read in full
            assert full.clearing_for(at) is not None or at < max(cutoffs)
            continue
        assert recent.settled(at) == full.settled(at)
        assert recent.clearing_for(at) == full.clearing_for(at) is None


def test_a_sale_before_the_latest_cutoff_is_read_in_full() -> None:
    conn = _db([100], [500, 900])
    full = ClosedPeriods.load(conn)
    assert ClosedPeriods.from_heads(100, 900, 899) is None
    assert full.clearing_for(899) == 2021 and full.clearing_for(499) == 2020
    assert ClosedPeriods.from_heads(100, 900, 900) == ClosedPeriods(100, ())
    assert full.clearing_for(900) is None
