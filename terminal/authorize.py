"""Authorization of one tap: a pure function of its inputs, no I/O.

``authorize(request, card, rules, limits, link, now_ms, meals_taken)`` decides approve or
decline, the amount, which purse pays how much (subsidy first), and for every decline a
stable reason code whose zh-CN text the display shows. The caller reads the cache and the
clock and passes them in; the function cannot touch a database or a device.

Available balance = the last server-confirmed balance − this terminal's unconfirmed sales
for the holder. Offline (no server link), the risk limits cap what may be approved.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import message
from shared.protocol import Item
from terminal.rules import CanteenRules, RiskLimits
from terminal.store import CardState


@dataclass(frozen=True)
class TapRequest:
    card_id: str | None
    method: str = "card"  # card | qr | face | ecny
    kind: str = "meal"  # meal | shop
    items: tuple[tuple[str, int], ...] = ()  # (sku, qty) for a shop basket
    amount_fen: int | None = None  # typed by the cashier in shop mode
    credential: str | None = None  # raw, as presented (SUN URL, QR text, ecny order): terminal.identify


@dataclass(frozen=True)
class LinkState:
    """What the terminal knows about its connection to the server."""

    online: bool
    offline_since_ms: int | None = None
    last_sync_ms: int | None = None  # last time the cache (deny-list) was confirmed current
    unsent_sales: int = 0
    clock_offset_ms: int | None = None  # server − terminal, when measured


@dataclass(frozen=True)
class Decision:
    approved: bool
    reason: str | None = None
    amount_fen: int = 0
    subsidy_fen: int = 0
    self_fen: int = 0
    meal_period: str | None = None
    visitor: bool = False
    items: tuple[Item, ...] = ()

    def message(self, lang: str = "zh") -> str:
        if self.approved:
            return "支付成功" if lang.startswith("zh") else "approved"
        return message(self.reason or "invalid_input", lang)


def decline(reason: str, **kw: object) -> Decision:
    return Decision(False, reason, **kw)  # type: ignore[arg-type]


def price(request: TapRequest, card: CardState, rules: CanteenRules, now_ms: int) -> Decision:
    """The amount to charge (no balance checks): meal by period and visitor status, or a
    shop basket / typed amount."""
    if request.kind == "meal":
        period = rules.period_at(now_ms)
        if period is None:
            return decline("outside_meal_hours")
        visitor = card.unit_id != rules.unit_id
        amount = period.price_fen
        if visitor and period.visitor_price_fen is not None:
            amount = period.visitor_price_fen
        return Decision(True, amount_fen=amount, meal_period=period.name, visitor=visitor)
    visitor = card.unit_id != rules.unit_id
    if request.items:
        items = []
        for sku, qty in request.items:
            item = rules.items.get(sku)
            if item is None:
                return decline("unknown_item")
            if item.reference_price_fen is not None and item.price_fen > item.reference_price_fen:
                return decline("price_above_reference")
            if qty <= 0:
                return decline("invalid_input")
            items.append(Item(sku, qty, item.price_fen))
        amount = sum(i.qty * i.unit_price_fen for i in items)
        return Decision(True, amount_fen=amount, items=tuple(items), visitor=visitor)
    if request.amount_fen is None or request.amount_fen <= 0:
        return decline("bad_amount")
    return Decision(True, amount_fen=request.amount_fen, visitor=visitor)


def authorize(
    request: TapRequest,
    card: CardState | None,
    rules: CanteenRules,
    limits: RiskLimits,
    link: LinkState,
    now_ms: int,
    meals_taken: int = 0,
) -> Decision:
    """Approve or decline one tap. ``meals_taken``: the holder's meals in the current
    period today that this terminal knows of."""
    if card is None:
        return decline("card_unknown")
    if card.card_status != "active" or card.blocked:
        return decline("card_blocked")
    if not link.online:
        if link.clock_offset_ms is not None and abs(link.clock_offset_ms) > limits.max_clock_offset_ms:
            return decline("clock_skew")
        if link.offline_since_ms is not None and now_ms - link.offline_since_ms > limits.max_offline_age_ms:
            return decline("terminal_offline_too_long")
        if link.last_sync_ms is None or now_ms - link.last_sync_ms > limits.max_denylist_age_ms:
            return decline("denylist_too_old")
        if link.unsent_sales >= limits.max_unsent_sales:
            return decline("offline_limit_reached")
    priced = price(request, card, rules, now_ms)
    if not priced.approved:
        return priced
    if priced.meal_period is not None and meals_taken >= rules.meal_limit:
        return decline("meal_limit_reached", meal_period=priced.meal_period)
    amount = priced.amount_fen
    if amount > limits.max_sale_fen:
        return decline("amount_too_large", amount_fen=amount)
    if not link.online:
        if card.unconfirmed_count >= limits.max_offline_sales:
            return decline("offline_limit_reached", amount_fen=amount)
        if card.unconfirmed_fen + amount > limits.max_offline_total_fen:
            return decline("offline_limit_reached", amount_fen=amount)
    subsidy_avail = max(card.subsidy_fen, 0)
    self_avail = max(card.self_fen, 0)
    available = subsidy_avail + self_avail - card.unconfirmed_fen
    if amount > available:
        return decline("insufficient_balance", amount_fen=amount)
    # spend order for the remaining money: subsidy first (unconfirmed sales used it first)
    subsidy_left = max(subsidy_avail - card.unconfirmed_fen, 0)
    from_subsidy = min(subsidy_left, amount)
    return Decision(
        True,
        amount_fen=amount,
        subsidy_fen=from_subsidy,
        self_fen=amount - from_subsidy,
        meal_period=priced.meal_period,
        visitor=priced.visitor,
        items=priced.items,
    )
