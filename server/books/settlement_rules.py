"""The money rules of settlement and year-end clearing, as plain functions of their inputs.

Quarterly settlement of one canteen (结算, 第十二条, 方案 三.3):

* ``gross`` — the quarter's purse-paid sales at the canteen.
* quality withholding — ``gross × (100 − pay_pct) %``, rounded half up to the fen, where
  ``pay_pct`` comes from the unit's quality score (考核评价结果) for the canteen's operator
  and the canteen's *quality bands*: a list of ``[min_score, pay_pct]``, e.g.
  ``[[90, 100], [80, 98], [0, 95]]`` — the first band (highest ``min_score`` first) whose
  ``min_score`` the score reaches applies. No bands configured: pay 100 %. No score
  entered: pay 100 % (the statement says the score is missing).
* settlement amount — ``gross − withholding``.
* fee (系统管理费) — 0.5 % of the settlement amount, rounded half up, and 0 for a
  self-operated canteen (自营, 免收).
* ``net`` — settlement amount − fee: what the operator is paid.

Late sales (dated in a closed quarter) come as *adjustment lines*; each line is withheld
at the pay percentage of the quarter it belongs to, and the fee is taken once, on the
statement's whole settlement amount. Always ``gross + adjustments = withheld + fee + net``.
A reversal (冲正) of a sale in a closed quarter is a *negative* line: its withholding is the
mirror of its sale's (rounding is symmetric about zero), and a statement whose negative
lines outweigh its sales settles negative — the operator gives back what it was paid.

Year-end clearing (年末清零) — see :func:`attribute` and :func:`take_in_order` (what is
cleared is the year's subsidy purse: :mod:`server.closing.clearing`). Rounding goes
through :func:`shared.money.round_half_up_div` only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.errors import DomainError
from shared.money import round_half_up_div

FEE_NUMERATOR, FEE_DENOMINATOR = 5, 1000  # 0.5 %
FULL_PAY_PCT = 100
Bands = tuple[tuple[int, int], ...]
DEFAULT_BANDS: Bands = ((0, FULL_PAY_PCT),)
K = TypeVar("K", bound=Hashable)


def validate_bands(raw: object) -> Bands:
    """Quality bands from user input, sorted highest ``min_score`` first.

    Each band is ``[min_score, pay_pct]`` with integers 0–100; ``min_score`` values are
    distinct, one of them is 0 (so every score has a band), and a lower score never pays
    a higher percentage.
    """
    if not isinstance(raw, (list, tuple)) or not raw:
        raise DomainError("invalid_input", "quality bands: a non-empty list of [min_score, pay_pct]")
    bands: list[tuple[int, int]] = []
    for band in raw:
        if (
            not isinstance(band, (list, tuple))
            or len(band) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in band)
        ):
            raise DomainError(
                "invalid_input", f"quality band must be [min_score, pay_pct] integers: {band!r}"
            )
        lo, pct = band
        if not (0 <= lo <= 100 and 0 <= pct <= 100):
            raise DomainError("invalid_input", f"quality band values must be 0..100: {band!r}")
        bands.append((lo, pct))
    bands.sort(reverse=True)
    mins = [lo for lo, _ in bands]
    if len(set(mins)) != len(mins):
        raise DomainError("invalid_input", "quality bands: min_score values must be distinct")
    if mins[-1] != 0:
        raise DomainError("invalid_input", "quality bands: one band must start at score 0")
    pcts = [pct for _, pct in bands]
    if any(a < b for a, b in zip(pcts, pcts[1:], strict=False)):
        raise DomainError("invalid_input", "quality bands: a lower score may not pay more")
    return tuple(bands)


def pay_pct(score: int | None, bands: Bands = DEFAULT_BANDS) -> int:
    """The percentage of the settlement paid for a quality score (None: not scored → 100)."""
    if score is None:
        return FULL_PAY_PCT
    for min_score, pct in bands:
        if score >= min_score:
            return pct
    return bands[-1][1]


def withholding_fen(amount_fen: int, pct: int) -> int:
    """Quality withholding: ``amount × (100 − pct) %``, rounded half up to the fen."""
    return round_half_up_div(amount_fen * (FULL_PAY_PCT - pct), FULL_PAY_PCT)


def fee_fen(settlement_fen: int, self_operated: bool) -> int:
    """The 0.5 % system fee, rounded half up; self-operated canteens pay none (方案 三.3)."""
    if self_operated:
        return 0
    return round_half_up_div(settlement_fen * FEE_NUMERATOR, FEE_DENOMINATOR)


@dataclass(frozen=True)
class Adjustment:
    """A late line: ``amount_fen`` of sales dated in an earlier, closed quarter (negative:
    reversals of such sales)."""

    amount_fen: int
    pay_pct: int


@dataclass(frozen=True)
class Figures:
    gross_fen: int
    withheld_gross_fen: int
    adjustments_fen: int
    withheld_adjustments: tuple[int, ...]  # per adjustment line, in input order
    withheld_fen: int  # total
    settlement_fen: int
    fee_fen: int
    net_fen: int


def settle(gross_fen: int, pct: int, adjustments: Sequence[Adjustment], self_operated: bool) -> Figures:
    """The figures of one canteen's statement (see the module docstring)."""
    if gross_fen < 0:
        raise ValueError("a quarter's gross is never negative")
    withheld_gross = withholding_fen(gross_fen, pct)
    withheld_adj = tuple(withholding_fen(a.amount_fen, a.pay_pct) for a in adjustments)
    adjustments_fen = sum(a.amount_fen for a in adjustments)
    withheld = withheld_gross + sum(withheld_adj)
    settlement = gross_fen + adjustments_fen - withheld
    fee = fee_fen(settlement, self_operated)
    return Figures(
        gross_fen=gross_fen,
        withheld_gross_fen=withheld_gross,
        adjustments_fen=adjustments_fen,
        withheld_adjustments=withheld_adj,
        withheld_fen=withheld,
        settlement_fen=settlement,
        fee_fen=fee,
        net_fen=settlement - fee,
    )


# --- year-end clearing ------------------------------------------------------------------


def attribute(
    amount_fen: int, credits_newest_first: Sequence[tuple[str, int]], fallback: str
) -> list[tuple[str, int]]:
    """Which paying unit a cleared amount goes back to.

    Spending is taken to use the oldest subsidy first, so what is left is the newest:
    walk the holder's allocation credits newest first, each giving back at most what it
    credited; anything beyond all credits (there should be none) goes to ``fallback`` (the
    holder's current unit). Parts for the same unit are merged, in first-seen order.
    """
    parts, left = take_in_order(amount_fen, credits_newest_first)
    out: dict[str, int] = {}
    for unit_id, part in parts:
        out[unit_id] = out.get(unit_id, 0) + part
    if left > 0:
        out[fallback] = out.get(fallback, 0) + left
    return list(out.items())


def take_in_order(amount_fen: int, available: Sequence[tuple[K, int]]) -> tuple[list[tuple[K, int]], int]:
    """Take up to ``amount_fen`` from the ``available`` (key, fen) in order.

    Returns the parts taken and what is still to pay. Used when a late sale dated before a
    cleared year end claws back the refund its holder's subsidy went to.
    """
    parts: list[tuple[K, int]] = []
    left = amount_fen
    for key, fen in available:
        if left <= 0:
            break
        part = min(left, fen)
        if part > 0:
            parts.append((key, part))
            left -= part
    return parts, left


def payee_nets(statements: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The net amount per payee of one quarter's statements (a payee may run several canteens)."""
    nets: dict[str, int] = {}
    for st in statements:
        name = st["payee"]["name"]
        nets[name] = nets.get(name, 0) + st["net_fen"]
    return nets


def payee_payouts(
    carried: Mapping[str, int], nets: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """One quarter's payments to payees: ``(paid, owed)``. A payee is paid the sum of its
    canteens' net amounts plus what it still owed back from earlier quarters (``carried``,
    negative); a sum at or below zero pays nothing and what is below zero is carried into
    the next quarter (``owed``, negative) — a negative statement is collected from the
    operator's next payments, never forgotten. ``sum(paid) + sum(owed)`` is always
    ``sum(carried) + sum(nets)``: no fen made or lost between quarters."""
    paid: dict[str, int] = {}
    owed: dict[str, int] = {}
    for payee in sorted(set(carried) | set(nets)):
        if carried.get(payee, 0) > 0:
            raise ValueError("only a debt is carried between quarters")
        total = carried.get(payee, 0) + nets.get(payee, 0)
        if total > 0:
            paid[payee] = total
        elif total < 0:
            owed[payee] = total
    return paid, owed
