"""The spend order (subsidy first, then self, then a recorded overdraft): one rule, in
``shared/spend_order.py``, that the terminal splits by when it approves a sale and the
server splits by when it books it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.clock import ms_from_china
from shared.spend_order import split_payment, subsidy_for_year
from terminal.authorize import CardState, LinkState, TapRequest, authorize
from terminal.rules import CanteenRules, RiskLimits

fen = st.integers(-(10**6), 10**7)
amounts = st.integers(0, 10**6)


def test_subsidy_is_spent_before_self_purse() -> None:
    s = split_payment(subsidy_balance_fen=500, self_balance_fen=1000, amount_fen=1200)
    assert (s.subsidy_fen, s.self_fen, s.overdraft_fen) == (500, 700, 0)


def test_a_shortfall_is_a_recorded_overdraft_on_the_self_purse() -> None:
    s = split_payment(subsidy_balance_fen=300, self_balance_fen=100, amount_fen=1200)
    assert (s.subsidy_fen, s.self_fen, s.overdraft_fen) == (300, 900, 800)


def test_a_negative_purse_counts_as_empty() -> None:
    s = split_payment(subsidy_balance_fen=-200, self_balance_fen=-50, amount_fen=1000)
    assert (s.subsidy_fen, s.self_fen, s.overdraft_fen) == (0, 1000, 1000)


def test_a_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError):
        split_payment(1000, 1000, -1)


@given(fen, fen, amounts)
def test_the_split_sums_to_the_amount(sub: int, self_: int, amount: int) -> None:
    s = split_payment(sub, self_, amount)
    assert s.subsidy_fen + s.self_fen == s.total_fen == amount
    assert s.subsidy_fen >= 0 and s.self_fen >= 0


@given(fen, fen, amounts)
def test_the_subsidy_part_never_exceeds_the_available_subsidy(sub: int, self_: int, amount: int) -> None:
    assert split_payment(sub, self_, amount).subsidy_fen <= max(sub, 0)


@given(fen, fen, amounts)
def test_the_self_purse_pays_only_once_the_subsidy_is_exhausted(sub: int, self_: int, amount: int) -> None:
    s = split_payment(sub, self_, amount)
    if s.self_fen > 0:
        assert s.subsidy_fen == max(sub, 0)
    else:
        assert s.subsidy_fen == amount


@given(fen, fen, amounts)
def test_the_overdraft_is_exactly_the_part_no_purse_had(sub: int, self_: int, amount: int) -> None:
    s = split_payment(sub, self_, amount)
    assert 0 <= s.overdraft_fen <= s.self_fen
    assert s.overdraft_fen == max(0, amount - max(sub, 0) - max(self_, 0))


# --- the terminal splits as the server will book ------------------------------------------

NOON = ms_from_china("2026-01-06T12:00")
RULES = CanteenRules.from_config("C01", {"unit_id": "U01", "items": {}})
SHOP_LIMITS = RiskLimits(max_sale_fen=10**6)


@given(st.integers(0, 50_000), st.integers(-5_000, 50_000), st.integers(1, 60_000))
def test_a_terminal_in_step_with_the_server_splits_as_the_server_books(
    sub: int, self_: int, amount: int
) -> None:
    """No unconfirmed sales: the terminal's balances are the ledger's, so the split it
    journals is the one the server will book."""
    card = CardState("C1", "active", "H1", "U01", sub, self_, False, 1, 0, 0)
    d = authorize(
        TapRequest("C1", kind="shop", amount_fen=amount),
        card,
        RULES,
        SHOP_LIMITS,
        LinkState(online=True, last_sync_ms=NOON),
        NOON,
    )
    if not d.approved:
        assert d.reason == "insufficient_balance" and amount > sub + self_
        return
    booked = split_payment(sub, self_, amount)
    assert (d.subsidy_fen, d.self_fen) == (booked.subsidy_fen, booked.self_fen)
    assert booked.overdraft_fen == 0  # online, the terminal sells only what the purses hold


@given(
    st.integers(0, 50_000),
    st.integers(-5_000, 50_000),
    st.integers(0, 30_000),
    st.integers(1, 20_000),
    st.integers(0, 5_000),
)
def test_the_terminal_counts_its_unconfirmed_sales_as_spent_from_the_subsidy_first(
    sub: int, self_: int, unconfirmed: int, amount: int, allowance: int
) -> None:
    card = CardState("C1", "active", "H1", "U01", sub, self_, False, 1, unconfirmed, 1)
    limits = RiskLimits(max_sale_fen=10**6, offline_allowance_fen=allowance, max_offline_total_fen=10**6)
    link = LinkState(online=False, offline_since_ms=NOON, last_sync_ms=NOON, clock_offset_ms=0)
    d = authorize(TapRequest("C1", kind="shop", amount_fen=amount), card, RULES, limits, link, NOON)
    if not d.approved:
        assert d.reason == "insufficient_balance"
        return
    assert d.subsidy_fen == min(max(sub - unconfirmed, 0), amount)
    assert d.self_fen == amount - d.subsidy_fen


def test_a_sale_spends_only_the_subsidy_of_its_own_year() -> None:

    # the server spoke in 2026: 2026 has 50, 2027 (early allocation) 300, nothing older
    assert subsidy_for_year(50, 2026, 300, 2026) == (50, 0)
    assert subsidy_for_year(50, 2026, 300, 2027) == (300, 50)  # from 1 January: 2026's expired
    assert subsidy_for_year(50, 2026, 300, 2028) == (0, 350)
    assert subsidy_for_year(50, 2026, 300, 2025) == (0, 0)
    assert subsidy_for_year(0, 2027, 0, 2027, expired_fen=80) == (0, 80)
    assert subsidy_for_year(50, None, 0, 2031) == (50, 0)  # a server without years: the old rule


def test_a_diner_with_only_expired_subsidy_is_told_so_and_self_money_still_pays() -> None:
    online = LinkState(online=True, last_sync_ms=NOON)
    limits = RiskLimits(max_sale_fen=100_000)
    expired = CardState("C1", "active", "H1", "U01", 0, 0, False, 1, 0, 0, expired_subsidy_fen=20_000)
    d = authorize(TapRequest("C1", kind="shop", amount_fen=1_200), expired, RULES, limits, online, NOON)
    assert (d.approved, d.reason, d.message()) == (False, "subsidy_expired", "补贴已到期，待年末清算")
    with_self = CardState("C1", "active", "H1", "U01", 0, 1_500, False, 1, 0, 0, expired_subsidy_fen=20_000)
    d = authorize(TapRequest("C1", kind="shop", amount_fen=1_200), with_self, RULES, limits, online, NOON)
    assert (d.approved, d.subsidy_fen, d.self_fen) == (True, 0, 1_200)
