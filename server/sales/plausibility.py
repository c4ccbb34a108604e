"""Is an incoming sale one an honest terminal could have made? A pure rule, no I/O.

A terminal's key proves who sent a sale, not that the sale is right: a stolen or buggy
terminal can sign anything the wire format allows. Before a sale touches a purse the
server checks it against what the server itself told the terminal (:func:`check_sale`):

* **time** — dated no later than the server's now plus the allowed clock offset
  (``max_clock_offset_ms``), and no earlier than the terminal's provisioning (less that
  offset): ``sale_time_future`` / ``sale_time_before_terminal``;
* **per-sale limit** — ``max_sale_fen`` (city ``settings.risk``, per canteen
  ``config.risk``), online sales too: ``sale_over_limit`` — unless the sale carries a PIN
  approval (:mod:`server.registry.pins`) for its card, terminal and amount, unused and
  made within the approval's lifetime (:func:`pin_approval_problem`; else
  ``sale_pin_invalid``);
* **offline limits** — an offline sale within ``max_offline_total_fen``, the most one card
  may spend offline at one terminal: ``sale_over_offline_limit``;
* **prices** — a meal costs its period's own-staff price, or its visitor price where the
  canteen has one and the payer is not staff of the canteen's unit (a digital-RMB payer is
  not identified: either price); a basket's items are on the price list at their prices
  (``sale_unknown_meal_period`` / ``sale_unknown_item`` / ``sale_price_mismatch``), each with
  the big-store reference price in force beside its price when the sale names one (a shop
  price is never above it, 第十条); a typed shop amount (自由金额) is allowed by the
  canteen (``allow_typed_amount``) and within its cap ``max_typed_amount_fen``
  (``sale_typed_amount``); below that only the limits bound it.

Terminals price with the rules they hold, which may be a little behind or ahead of the
server's latest: every canteen config and settings version *in force at some moment of
the sale's window* (:func:`sale_window`: back by how long a terminal may sell without
syncing, forward by the allowed clock offset) is accepted, and a limit is the most
generous of them. Digital-RMB sales move no purse and were charged by the gateway: the
limits do not apply to them, the prices and times do.

A sale that fails is quarantined by the caller (:mod:`server.sales.apply`), never applied
silently and never dropped; :mod:`server.sales.quarantine` lets an admin decide.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.registry.pins import Approval
from shared.protocol import Item, Sale
from shared.risk_limits import RiskLimits


@dataclass(frozen=True)
class Implausible:
    """Why a sale is held back: a reason code (``shared.protocol.QUARANTINE_REASONS``)
    and what exactly was wrong (English, for the admin)."""

    code: str
    detail: str


@dataclass(frozen=True)
class SaleFacts:
    """What the server knows that bears on one sale."""

    canteens: tuple[dict[str, Any], ...]  # the canteen's configs in force in the sale's window
    limits: tuple[RiskLimits, ...]  # the risk limits in force in that window
    terminal_since_ms: int  # when the terminal was provisioned
    now_ms: int  # the server's clock
    holder_unit_id: str | None  # the payer's unit; None when not identified (digital RMB)
    pin_approval: Approval | None = None  # the approval the sale names, as the server recorded it


def sale_window(occurred_at_ms: int, limits: RiskLimits) -> tuple[int, int]:
    """The times whose rules a terminal may have priced a sale at ``occurred_at_ms`` with:
    back by the longest it may sell without a confirmed-current cache, forward by the
    allowed clock offset."""
    lag = max(limits.max_denylist_age_ms, limits.max_offline_age_ms) + limits.max_clock_offset_ms
    return occurred_at_ms - lag, occurred_at_ms + limits.max_clock_offset_ms


def in_force(since: Sequence[int], lo: int, hi: int) -> range:
    """Indexes of the versions (sorted by ``since``, the time each took effect) in force
    at some moment of ``[lo, hi]``: the last one from before ``lo``, and all from within.
    Before the first recorded version the first one counts (a history that does not reach
    back that far)."""
    if not since:
        return range(0)
    first = max(bisect.bisect_right(since, lo) - 1, 0)
    return range(first, max(bisect.bisect_right(since, hi), first + 1))


def check_sale(sale: Sale, facts: SaleFacts) -> Implausible | None:
    """None when the sale is plausible, else why not (the first rule it breaks)."""
    slack = max(lim.max_clock_offset_ms for lim in facts.limits)
    if sale.occurred_at_ms > facts.now_ms + slack:
        return Implausible(
            "sale_time_future", f"dated {sale.occurred_at_ms - facts.now_ms} ms after the server's now"
        )
    if sale.occurred_at_ms < facts.terminal_since_ms - slack:
        return Implausible("sale_time_before_terminal", "dated before the terminal was provisioned")
    if sale.method != "ecny":
        most = max(lim.max_sale_fen for lim in facts.limits)
        if sale.amount_fen > most:
            if sale.pin_approval is None:
                return Implausible("sale_over_limit", f"{sale.amount_fen} fen > max_sale_fen {most}")
            problem = pin_approval_problem(sale, facts.pin_approval, slack)
            if problem is not None:
                return Implausible("sale_pin_invalid", problem)
        if sale.offline:
            most = max(lim.max_offline_total_fen for lim in facts.limits)
            if sale.amount_fen > most:
                return Implausible(
                    "sale_over_offline_limit", f"offline {sale.amount_fen} fen > max_offline_total_fen {most}"
                )
    if sale.kind == "meal":
        return _check_meal(sale, facts)
    return _check_items(sale, facts.canteens)


def pin_approval_problem(sale: Sale, approval: Approval | None, slack_ms: int) -> str | None:
    """Why the PIN approval a sale names does not cover it (English), or None: it must
    exist, be for this card, terminal and amount, not be used by another sale, and the sale
    must be dated within its lifetime (give or take the allowed clock offset)."""
    if approval is None:
        return "no such PIN approval"
    if approval.sale_id is not None and approval.sale_id != sale.sale_id:
        return f"PIN approval already used by sale {approval.sale_id}"
    if (approval.card_id, approval.terminal_id) != (sale.card_id, sale.terminal_id):
        return "PIN approval is for another card or terminal"
    if approval.amount_fen != sale.amount_fen:
        return f"PIN approval is for {approval.amount_fen} fen, the sale is {sale.amount_fen} fen"
    if not approval.issued_at_ms - slack_ms <= sale.occurred_at_ms <= approval.expires_at_ms + slack_ms:
        return "sale dated outside the PIN approval's lifetime"
    return None


def meal_prices(canteen: dict[str, Any], period: str, holder_unit_id: str | None) -> set[int]:
    """What a meal of ``period`` may cost under one canteen config: the staff price, and
    the visitor price where set for a payer not of the canteen's unit (or not identified)."""
    meal = (canteen.get("meals") or {}).get(period)
    if not isinstance(meal, dict) or not isinstance(meal.get("price_fen"), int):
        return set()
    prices = {meal["price_fen"]}
    visitor = meal.get("visitor_price_fen")
    if isinstance(visitor, int) and (holder_unit_id is None or holder_unit_id != canteen.get("unit_id")):
        prices.add(visitor)
    return prices


def _check_meal(sale: Sale, facts: SaleFacts) -> Implausible | None:
    period = sale.meal_period or ""
    allowed: set[int] = set()
    for canteen in facts.canteens:
        allowed |= meal_prices(canteen, period, facts.holder_unit_id)
    if not allowed:
        return Implausible("sale_unknown_meal_period", f"{sale.canteen_id} has no {period!r} meal")
    if sale.amount_fen not in allowed:
        prices = ", ".join(str(p) for p in sorted(allowed))
        return Implausible(
            "sale_price_mismatch", f"{period} {sale.amount_fen} fen, price(s) in force: {prices}"
        )
    return None


def _check_items(sale: Sale, canteens: Sequence[dict[str, Any]]) -> Implausible | None:
    """A basket: each item on the price list at a price in force, with the reference price
    in force beside it when the sale names one (and never below its price). A typed
    amount: allowed by the canteen, within its cap."""
    if not sale.items:
        return _check_typed_amount(sale, canteens)
    for item in sale.items:
        entries = [
            entry
            for canteen in canteens
            if isinstance(entry := (canteen.get("items") or {}).get(item.sku), dict)
            and isinstance(entry.get("price_fen"), int)
        ]
        if not entries:
            return Implausible("sale_unknown_item", f"{item.sku} is not on {sale.canteen_id}'s price list")
        if not any(_priced_as(item, entry) for entry in entries):
            return Implausible(
                "sale_price_mismatch",
                f"{item.sku} at {item.unit_price_fen} fen"
                + ("" if item.reference_price_fen is None else f" (reference {item.reference_price_fen})")
                + ", price(s) in force: "
                + ", ".join(sorted({_price_text(e) for e in entries})),
            )
    return None


def _priced_as(item: Item, entry: dict[str, Any]) -> bool:
    """Was ``item`` priced by this price-list entry (price, and reference when named)?"""
    if item.unit_price_fen != entry["price_fen"]:
        return False
    if item.reference_price_fen is None:  # a terminal from before reference prices travelled
        return True
    return item.reference_price_fen == entry.get("reference_price_fen") and (
        item.unit_price_fen <= item.reference_price_fen
    )


def _price_text(entry: dict[str, Any]) -> str:
    ref = entry.get("reference_price_fen")
    return f"{entry['price_fen']}" + ("" if ref is None else f" (reference {ref})")


def _check_typed_amount(sale: Sale, canteens: Sequence[dict[str, Any]]) -> Implausible | None:
    """A shop amount the cashier typed: some config in force allowed typed amounts
    (``allow_typed_amount``, true unless set false) with a cap at or above the amount."""
    for canteen in canteens:
        cap = canteen.get("max_typed_amount_fen")
        if canteen.get("allow_typed_amount", True) is not False and (
            not isinstance(cap, int) or sale.amount_fen <= cap
        ):
            return None
    return Implausible(
        "sale_typed_amount", f"typed amount {sale.amount_fen} fen: not allowed, or above the cap in force"
    )
