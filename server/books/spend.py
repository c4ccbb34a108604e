"""Which purse pays: the spend-order rule, as a pure function.

Subsidy purse (就餐经费) first, then self purse (自费充值). A sale the terminal approved
offline must still be honoured when the server finds less money than the terminal thought
(two terminals spent the same balance while cut off): the shortfall is taken from the self
purse, which goes negative — a recorded overdraft — and the cardholder is blocked until a
top-up covers it.
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
    """Split ``amount_fen`` over the purses: subsidy first, then self, then overdraft."""
    if amount_fen < 0:
        raise ValueError("amount must not be negative")
    from_subsidy = min(max(subsidy_balance_fen, 0), amount_fen)
    rest = amount_fen - from_subsidy
    covered_by_self = min(max(self_balance_fen, 0), rest)
    return Split(from_subsidy, rest, rest - covered_by_self)
