"""Authorization of one tap: a pure function of its inputs, no I/O.

``authorize(request, card, rules, limits, link, now_ms, meals_taken)`` decides approve or
decline, the amount, which purse pays how much (subsidy first, by the server's own rule:
:func:`shared.spend_order.split_payment`), and for every decline a stable reason code whose
zh-CN text the display shows. The caller reads the cache and the clock and passes them in;
the function cannot touch a database or a device.

The money rule it guarantees (property-tested in ``tests/test_authorize_properties.py``):

* ``available = subsidy + self (last server-confirmed) − this terminal's unconfirmed sales``;
  an approved sale never exceeds ``available`` online, nor ``available +
  limits.offline_allowance_fen`` offline;
* a card that is not active, or whose holder is blocked, is never approved;
* offline, a card's unconfirmed total and count stay within the per-card limits;
* a shop basket is priced from the cached price list only while that list is fresh
  (``max_price_age_ms``, :func:`terminal.basket.price_list_gate`), and a typed amount only
  where the canteen allows one, up to its cap;
* a sale above ``limits.max_sale_fen`` (the no-PIN limit, 小额免密) is approved only online
  and only with a :class:`PinApproval` the server gave for this card and amount; without
  one the decision is ``pin_required`` (the device loop asks for the PIN and taps again),
  offline it is ``pin_offline``.

"Online" here means more than a TCP connection: the link is up **and** the cache is
caught up with the server's delta stream; otherwise the offline limits apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import message
from shared.protocol import Item
from shared.spend_order import split_payment
from terminal.basket import price_items, price_list_gate, typed_amount_problem
from terminal.rules import CanteenRules, RiskLimits


@dataclass(frozen=True)
class PinApproval:
    """The server's answer to a right PIN (``POST /api/v1/terminals/<id>/pin-check``): good
    for one sale of ``amount_fen`` by ``card_id`` at this terminal. Never holds the PIN."""

    approval_id: str
    card_id: str
    amount_fen: int


@dataclass(frozen=True)
class TapRequest:
    """One sale attempt. ``card_id`` comes from whichever identification the diner used
    (card, QR code, face); identifying them is not this module's business
    (:mod:`terminal.identify` resolves ``credential`` to the card before authorizing)."""

    card_id: str | None
    method: str = "card"  # card | qr | face | ecny
    kind: str = "meal"  # meal | shop
    items: tuple[tuple[str, int], ...] = ()  # (sku, qty) for a shop basket
    amount_fen: int | None = None  # typed by the cashier in shop mode
    # as presented (SUN URL, QR text, ecny order); terminal.identify turns it into the
    # method-specific proof that is journaled with the sale
    credential: str | None = None
    pin_approval: PinApproval | None = None  # after an online PIN check (above max_sale_fen)


@dataclass(frozen=True)
class CardState:
    """What the terminal knows about a card and its holder at the moment of a tap."""

    card_id: str
    card_status: str
    holder_id: str
    unit_id: str
    subsidy_fen: int  # the subsidy a sale now may spend: this year's (年末清零)
    self_fen: int
    blocked: bool
    version: int
    unconfirmed_fen: int  # this terminal's sales for the holder not yet acknowledged
    unconfirmed_count: int
    expired_subsidy_fen: int = 0  # last year's subsidy, kept for the year-end clearing, not spent

    @property
    def available_fen(self) -> int:
        """Last confirmed balance (a negative purse is a debt) minus unconfirmed sales."""
        return self.subsidy_fen + self.self_fen - self.unconfirmed_fen


@dataclass(frozen=True)
class LinkState:
    """What the terminal knows about its connection to the server."""

    online: bool  # link up and cache caught up with the server's deltas
    offline_since_ms: int | None = None
    last_sync_ms: int | None = None  # last time the cache (deny-list) was confirmed current
    unsent_sales: int = 0
    clock_offset_ms: int | None = None  # server − terminal, when measured
    clock_floor_ms: int | None = None  # latest time this terminal recorded; the clock must not be before it


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
    """The amount to charge (no balance checks): a meal by period and visitor status, or a
    shop basket / typed amount."""
    visitor = card.unit_id != rules.unit_id
    if request.kind == "meal":
        period = rules.period_at(now_ms)
        if period is None:
            return decline("outside_meal_hours")
        return Decision(True, amount_fen=period.price_for(visitor), meal_period=period.name, visitor=visitor)
    if request.kind != "shop":
        return decline("invalid_input")
    if request.items:
        if request.amount_fen is not None:
            return decline("invalid_input")
        items = price_items(rules, request.items)  # terminal.basket: one rule for scan and sale
        if isinstance(items, str):
            return decline(items)
        amount = sum(i.qty * i.unit_price_fen for i in items)
        if amount <= 0:
            return decline("bad_amount")
        return Decision(True, amount_fen=amount, items=items, visitor=visitor)
    if request.amount_fen is None:
        return decline("basket_empty")
    problem = typed_amount_problem(rules, request.amount_fen)
    if problem is not None:
        return decline(problem)
    return Decision(True, amount_fen=request.amount_fen, visitor=visitor)


def offline_gate(limits: RiskLimits, link: LinkState, now_ms: int) -> str | None:
    """Why this terminal may not sell offline right now, or None."""
    if link.clock_offset_ms is not None and abs(link.clock_offset_ms) > limits.max_clock_offset_ms:
        return "clock_skew"
    if link.clock_floor_ms is not None and now_ms < link.clock_floor_ms - limits.max_clock_offset_ms:
        return "clock_skew"  # the clock went backwards (e.g. a Pi without RTC rebooted)
    if link.offline_since_ms is not None and now_ms - link.offline_since_ms > limits.max_offline_age_ms:
        return "terminal_offline_too_long"
    if link.last_sync_ms is None or now_ms - link.last_sync_ms > limits.max_denylist_age_ms:
        return "denylist_too_old"
    return None


def pin_gate(request: TapRequest, card: CardState, amount_fen: int, link: LinkState) -> str | None:
    """For a sale above the no-PIN limit: why it may not go ahead yet, or None. Offline the
    server cannot check a PIN (``pin_offline``); online it needs an approval for exactly
    this card and amount (``pin_required``)."""
    if not link.online:
        return "pin_offline"
    approval = request.pin_approval
    if approval is None or approval.card_id != card.card_id or approval.amount_fen != amount_fen:
        return "pin_required"
    return None


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
    if link.unsent_sales >= limits.max_unsent_sales:
        return decline("offline_limit_reached")
    if not link.online:
        gate = offline_gate(limits, link, now_ms)
        if gate is not None:
            return decline(gate)
    priced = price(request, card, rules, now_ms)
    if not priced.approved:
        return priced
    if priced.items:  # priced from the cached list: it must be fresh enough
        stale = price_list_gate(limits, link.last_sync_ms, now_ms)
        if stale is not None:
            return decline(stale, amount_fen=priced.amount_fen)
    amount = priced.amount_fen
    if priced.meal_period is not None and meals_taken >= rules.meal_limit:
        return decline("meal_limit_reached", meal_period=priced.meal_period, amount_fen=amount)
    if amount > limits.max_sale_fen:
        reason = pin_gate(request, card, amount, link)
        if reason is not None:
            return decline(reason, amount_fen=amount)
    allowance = 0
    if not link.online:
        if card.unconfirmed_count >= limits.max_offline_sales:
            return decline("offline_limit_reached", amount_fen=amount)
        if card.unconfirmed_fen + amount > limits.max_offline_total_fen:
            return decline("offline_limit_reached", amount_fen=amount)
        allowance = limits.offline_allowance_fen
    if amount > card.available_fen + allowance:
        short = "subsidy_expired" if card.expired_subsidy_fen > 0 else "insufficient_balance"
        return decline(short, amount_fen=amount, meal_period=priced.meal_period)
    # spend order: subsidy first; this terminal's unconfirmed sales used the subsidy first.
    # No overdraft beyond the check above: the self share is at most what is left of the
    # self purse (+ the offline allowance).
    subsidy_left = card.subsidy_fen - card.unconfirmed_fen
    split = split_payment(subsidy_left, card.available_fen - max(subsidy_left, 0), amount)
    return Decision(
        True,
        amount_fen=amount,
        subsidy_fen=split.subsidy_fen,
        self_fen=split.self_fen,
        meal_period=priced.meal_period,
        visitor=priced.visitor,
        items=priced.items,
    )
