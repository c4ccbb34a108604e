"""Which purse pays: the spend-order rule, as one pure function for both sides.

Subsidy purse (就餐经费) first, then self purse (自费充值). The terminal splits a sale it
approves (:func:`terminal.authorize.authorize`, over the balances it cached less its own
unconfirmed sales); the server splits it again over the ledger's balances when it applies
the sale (:mod:`server.sales`) — the server's split is the one that is booked.

The split never refuses: whether an amount beyond both purses may be sold is the caller's
decision, made before splitting. The terminal declines anything above the available balance
(plus, offline, its allowance). The server must honour a sale the terminal approved offline
even when it finds less money than the terminal thought (two terminals spent the same
balance while cut off): the shortfall is taken from the self purse, which goes negative —
the :attr:`Split.overdraft_fen`, recorded, and the cardholder blocked until a top-up covers
it. A negative purse (a debt) counts as empty.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    subsidy_fen: int
    self_fen: int
    overdraft_fen: int  # part of self_fen that the self purse did not have

    @property
    def total_fen(self) -> int:
        return self.subsidy_fen + self.self_fen


def split_payment(subsidy_balance_fen: int, self_balance_fen: int, amount_fen: int) -> Split:
    """Split ``amount_fen`` over the purses: subsidy first, then self, then overdraft
    (the part of the self share beyond the self purse)."""
    if amount_fen < 0:
        raise ValueError("amount must not be negative")
    from_subsidy = min(max(subsidy_balance_fen, 0), amount_fen)
    rest = amount_fen - from_subsidy
    covered_by_self = min(max(self_balance_fen, 0), rest)
    return Split(from_subsidy, rest, rest - covered_by_self)


def subsidy_for_year(
    subsidy_fen: int, subsidy_year: int | None, next_subsidy_fen: int, year: int, expired_fen: int = 0
) -> tuple[int, int]:
    """(spendable, expired) subsidy for a sale dated in ``year`` (Asia/Shanghai), from a
    holder's subsidy as the server sent it: ``subsidy_fen`` of ``subsidy_year`` and
    ``next_subsidy_fen`` of the year after (``expired_fen``: earlier years' subsidy not yet
    cleared). Subsidy allocated for a year pays only for sales
    dated in that year (第十条 年末清零): from 1 January last year's is *expired* — kept for
    the year-end clearing, never spent — and next year's is not spendable before 1 January.
    ``subsidy_year`` None (a server that does not track years) keeps the old rule: all of
    ``subsidy_fen`` is spendable."""
    if subsidy_year is None:
        return subsidy_fen, 0
    expired = max(expired_fen, 0)
    if year == subsidy_year:
        return subsidy_fen, expired
    if year == subsidy_year + 1:
        return next_subsidy_fen, expired + max(subsidy_fen, 0)
    if year > subsidy_year + 1:
        return 0, expired + max(subsidy_fen, 0) + max(next_subsidy_fen, 0)
    return 0, 0  # a sale dated before the year the server spoke of: no subsidy is known for it
