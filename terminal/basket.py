"""The cashier's basket (购物篮) in shop mode, and the rules that refuse what may not be sold. Pure.

A :class:`Basket` is an immutable value: every operation returns a new one, or raises a
:class:`~shared.errors.DomainError` whose code the display shows in Chinese and which
leaves the basket as it was. The device flow (:mod:`terminal.shop_flow`) keeps the current
basket; :mod:`terminal.authorize` and :mod:`terminal.ecny` price a basket with
:func:`price_items` and a typed amount with :func:`typed_amount_problem`, so the rules below
are written once for the scanner, the keypad and the payment.

What is refused, and why (the code):

* an item not in this canteen's cached price list — a barcode no item has
  (``barcode_unknown``), an item code that names none (``unknown_item``);
* an item whose price is above its big-store reference price (第十条): the rules leave it
  out when the prices arrive (:class:`~terminal.rules.CanteenRules`), and a scan or a code
  of it says so (``price_above_reference``);
* any item while the price list is stale: the cache has not been confirmed current by the
  server within ``max_price_age_ms`` (``price_list_stale``, :func:`price_list_gate`);
* a quantity outside 1–999, or more than 1000 of one item in a sale (the wire's bound)
  (``basket_bad_quantity``); more lines than one sale may carry (``basket_full``);
* a typed amount (自由金额) where the canteen does not allow one
  (``typed_amount_not_allowed``), above the canteen's cap (``typed_amount_above_cap``), or
  together with scanned items (``typed_amount_with_items``: a sale is either a basket at
  list prices or one typed amount);
* voiding a line of, or paying for, an empty basket (``basket_empty``).

Each scan or typed code is its own line, so "void the last line" undoes exactly the last
action; the sale carries one item per sku (:meth:`Basket.items`), lines of one sku added up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.barcode import BarcodeError, normalize
from shared.errors import DomainError
from shared.protocol import Item
from shared.protocol.messages import MAX_ITEMS_PER_SALE
from shared.risk_limits import RiskLimits
from terminal.rules import CanteenRules, ShopItem

MAX_QTY = 999  # one line; the cashier types at most three digits
MAX_QTY_PER_ITEM = 1000  # one sku in one sale (shared.protocol.Item)
MAX_LINES = MAX_ITEMS_PER_SALE


@dataclass(frozen=True)
class Line:
    sku: str
    name: str
    qty: int
    unit_price_fen: int
    reference_price_fen: int | None = None

    @property
    def amount_fen(self) -> int:
        return self.qty * self.unit_price_fen


@dataclass(frozen=True)
class Basket:
    lines: tuple[Line, ...] = ()
    typed_amount_fen: int | None = None  # a free amount the cashier typed (no lines then)

    @property
    def empty(self) -> bool:
        return not self.lines and self.typed_amount_fen is None

    @property
    def total_fen(self) -> int:
        if self.typed_amount_fen is not None:
            return self.typed_amount_fen
        return sum(line.amount_fen for line in self.lines)

    @property
    def pieces(self) -> int:
        """How many pieces (件) the lines hold."""
        return sum(line.qty for line in self.lines)

    @property
    def last(self) -> Line | None:
        return self.lines[-1] if self.lines else None

    def items(self) -> tuple[tuple[str, int], ...]:
        """(sku, qty) per sku in the order first scanned: what the sale asks for."""
        qty: dict[str, int] = {}
        for line in self.lines:
            qty[line.sku] = qty.get(line.sku, 0) + line.qty
        return tuple(qty.items())


# --- the price list -----------------------------------------------------------------------


def price_list_gate(limits: RiskLimits, last_sync_ms: int | None, now_ms: int) -> str | None:
    """``price_list_stale`` when the cached prices were last confirmed current by the server
    longer than ``max_price_age_ms`` ago (or never), else None. ``last_sync_ms`` is now while
    the terminal is online and caught up (:class:`terminal.authorize.LinkState`)."""
    if last_sync_ms is None or now_ms - last_sync_ms > limits.max_price_age_ms:
        return "price_list_stale"
    return None


def find_item(rules: CanteenRules, code: str) -> ShopItem:
    """The item a scanned barcode or a code typed on the keypad sells: an item code
    (sku) first, then a barcode (a UPC-A finds its EAN-13). Raises the refusal."""
    text = code.strip()
    if text in rules.items:
        return rules.items[text]
    if text in rules.above_reference:
        raise DomainError("price_above_reference", f"item {text}")
    try:
        barcode = normalize(text)
    except BarcodeError:
        raise DomainError("unknown_item", text) from None
    sku = rules.by_barcode.get(barcode)
    if sku is not None and sku in rules.items:
        return rules.items[sku]
    if barcode in rules.refused_barcodes:
        raise DomainError("price_above_reference", f"barcode {barcode}: {rules.refused_barcodes[barcode]}")
    raise DomainError("barcode_unknown", barcode)


def price_items(rules: CanteenRules, items: tuple[tuple[str, int], ...]) -> tuple[Item, ...] | str:
    """The sale's items at the cached list prices, each with its reference price, or the
    decline reason (an item left out of the rules, a bad quantity)."""
    out = []
    for sku, qty in items:
        item = rules.items.get(sku)
        if item is None:  # left out of the rules: unknown, or priced above the reference
            return "price_above_reference" if sku in rules.above_reference else "unknown_item"
        if not 0 < qty <= MAX_QTY_PER_ITEM:
            return "invalid_input"
        out.append(Item(sku, qty, item.price_fen, item.reference_price_fen))
    return tuple(out)


def typed_amount_problem(rules: CanteenRules, amount_fen: int | None) -> str | None:
    """Why the cashier may not charge this typed amount here, or None."""
    if not rules.allow_typed_amount:
        return "typed_amount_not_allowed"
    if amount_fen is None or amount_fen <= 0:
        return "bad_amount"
    if rules.max_typed_amount_fen is not None and amount_fen > rules.max_typed_amount_fen:
        return "typed_amount_above_cap"
    return None


# --- what the cashier does ----------------------------------------------------------------


def add(
    basket: Basket,
    rules: CanteenRules,
    limits: RiskLimits,
    last_sync_ms: int | None,
    now_ms: int,
    code: str,
    qty: int = 1,
) -> Basket:
    """The basket with one more line: the item ``code`` names (scanned or typed)."""
    if basket.typed_amount_fen is not None:
        raise DomainError("typed_amount_with_items", "clear the typed amount first")
    stale = price_list_gate(limits, last_sync_ms, now_ms)
    if stale is not None:
        raise DomainError(stale, f"last confirmed {now_ms - (last_sync_ms or 0)} ms ago")
    item = find_item(rules, code)
    if len(basket.lines) >= MAX_LINES:
        raise DomainError("basket_full", f"{MAX_LINES} lines")
    line = Line(item.sku, item.name, qty, item.price_fen, item.reference_price_fen)
    return _checked(replace(basket, lines=(*basket.lines, line)))


def set_quantity(basket: Basket, qty: int) -> Basket:
    """The last line with ``qty`` pieces (数量)."""
    last = basket.last
    if last is None:
        raise DomainError("basket_empty", "no line to set a quantity on")
    return _checked(replace(basket, lines=(*basket.lines[:-1], replace(last, qty=qty))))


def void_last(basket: Basket) -> tuple[Basket, Line | None]:
    """The basket without its last line (撤销), and that line; a typed amount is voided
    the same way (the line is then None)."""
    if basket.typed_amount_fen is not None:
        return replace(basket, typed_amount_fen=None), None
    if not basket.lines:
        raise DomainError("basket_empty", "nothing to void")
    return replace(basket, lines=basket.lines[:-1]), basket.lines[-1]


def type_amount(basket: Basket, rules: CanteenRules, amount_fen: int) -> Basket:
    """A free amount instead of items (自由金额), where the canteen allows one, capped."""
    if basket.lines:
        raise DomainError("typed_amount_with_items", f"{len(basket.lines)} line(s) in the basket")
    problem = typed_amount_problem(rules, amount_fen)
    if problem is not None:
        raise DomainError(problem, f"{amount_fen} fen")
    return Basket(typed_amount_fen=amount_fen)


def payable(basket: Basket) -> Basket:
    """The basket, if something is in it to pay for."""
    if basket.empty:
        raise DomainError("basket_empty", "nothing to pay for")
    return basket


def _checked(basket: Basket) -> Basket:
    last = basket.last
    if last is not None and not 0 < last.qty <= MAX_QTY:
        raise DomainError("basket_bad_quantity", f"{last.qty}")
    if any(qty > MAX_QTY_PER_ITEM for _, qty in basket.items()):
        raise DomainError("basket_bad_quantity", f"more than {MAX_QTY_PER_ITEM} of one item")
    return basket
