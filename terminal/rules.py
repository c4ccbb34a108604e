"""A canteen's rules and the risk limits, parsed from the cached config.

The server pushes each canteen's config as JSON and the city-wide terminal ``settings``;
this module turns them into typed values for :func:`terminal.authorize.authorize`. The
shape of a canteen config (owned by the terminal)::

    {"unit_id": "U01",
     "meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200,
                         "visitor_price_fen": 1500}},          # visitor price optional
     "meal_limit": 1,                                          # meals per card per period
     "items": {"tissue": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400,
                          "barcodes": ["6901234567892"]}},             # barcodes optional
     "allow_typed_amount": true,                               # cashier may type an amount
     "max_typed_amount_fen": 5000,                             # … up to this (optional)
     "operator_cards": ["C00042"],                             # tap shows the day's totals
     "operators": {"OP0001": {"name": "王五", "pin_hash": "scrypt$…"}},  # may reverse (冲正)
     "reversal_window_minutes": 10,                            # shared.reversal_rules
     "risk": {...}}                                            # overrides settings["risk"]

Times of day are minutes after midnight, Asia/Shanghai. A shop item priced above its
reference price (第十条: no dearer than the big stores) is refused here, when the prices
arrive, and can never be sold. Bad values never stop a terminal: a malformed meal period,
item or limit is left out (limits fall back to the safe defaults) and listed in
``problems`` for the status report. A barcode that is not a valid EAN/UPC, or that two
items claim, is left out the same way (the items stay on sale by their code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.barcode import BarcodeError, normalize
from shared.clock import china_minute_of_day
from shared.risk_limits import HOUR_MS, MINUTE_MS, RiskLimits

__all__ = ["HOUR_MS", "MINUTE_MS", "CanteenRules", "MealPeriod", "Operator", "RiskLimits", "ShopItem"]


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    value = int(h) * 60 + int(m)
    if not (0 <= int(m) < 60 and 0 <= value <= 24 * 60):
        raise ValueError(f"bad time of day {hhmm!r}")
    return value


@dataclass(frozen=True)
class MealPeriod:
    name: str
    start_min: int
    end_min: int  # exclusive
    price_fen: int
    visitor_price_fen: int | None = None

    def contains(self, minute_of_day: int) -> bool:
        return self.start_min <= minute_of_day < self.end_min

    def price_for(self, visitor: bool) -> int:
        """Own-unit staff pay ``price_fen``; visitors pay the visitor price where set."""
        if visitor and self.visitor_price_fen is not None:
            return self.visitor_price_fen
        return self.price_fen


@dataclass(frozen=True)
class ShopItem:
    sku: str
    name: str
    price_fen: int
    reference_price_fen: int | None
    barcodes: tuple[str, ...] = ()  # EAN-13 / EAN-8, normalized (shared.barcode)


@dataclass(frozen=True)
class Operator:
    """A canteen operator (操作员) who may reverse a sale: the PIN as a hash record only."""

    card_id: str
    name: str
    pin_hash: str


@dataclass(frozen=True)
class CanteenRules:
    canteen_id: str
    unit_id: str
    meals: tuple[MealPeriod, ...] = ()
    meal_limit: int = 1
    items: dict[str, ShopItem] = field(default_factory=dict)
    allow_uid_only: bool = True
    allow_typed_amount: bool = True
    max_typed_amount_fen: int | None = None  # the cap on a typed amount; None: only the risk limits
    operator_cards: frozenset[str] = frozenset()
    problems: tuple[str, ...] = ()  # config entries that were left out, and why
    above_reference: frozenset[str] = frozenset()  # skus left out for a price above the reference
    by_barcode: dict[str, str] = field(default_factory=dict)  # normalized barcode → sku
    # barcodes of items left out for a price above the reference: a scan names the refusal
    refused_barcodes: dict[str, str] = field(default_factory=dict)
    operators: dict[str, Operator] = field(default_factory=dict)  # card → operator (冲正)

    @classmethod
    def from_config(cls, canteen_id: str, config: dict[str, Any]) -> CanteenRules:
        problems: list[str] = []
        meals: list[MealPeriod] = []
        for name, m in (config.get("meals") or {}).items():
            try:
                visitor = m.get("visitor_price_fen")
                period = MealPeriod(
                    name=name,
                    start_min=_minutes(m["start"]),
                    end_min=_minutes(m["end"]),
                    price_fen=_fen(m["price_fen"]),
                    visitor_price_fen=None if visitor is None else _fen(visitor),
                )
                if period.start_min >= period.end_min:
                    raise ValueError("start must be before end")
                if any(p.start_min < period.end_min and period.start_min < p.end_min for p in meals):
                    raise ValueError("overlaps another meal period")
                meals.append(period)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.append(f"meal {name}: {exc}")
        items: dict[str, ShopItem] = {}
        above_reference: set[str] = set()
        refused_barcodes: dict[str, str] = {}
        for sku, i in (config.get("items") or {}).items():
            try:
                ref = i.get("reference_price_fen")
                item = ShopItem(
                    sku,
                    str(i.get("name", sku)),
                    _fen(i["price_fen"]),
                    None if ref is None else _fen(ref),
                    _barcodes(sku, i.get("barcodes"), problems),
                )
                if item.reference_price_fen is not None and item.price_fen > item.reference_price_fen:
                    above_reference.add(sku)
                    refused_barcodes.update(dict.fromkeys(item.barcodes, sku))
                    raise ValueError("price above the reference price (第十条)")
                items[sku] = item
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.append(f"item {sku}: {exc}")
        by_barcode: dict[str, str] = {}
        claimed_twice: set[str] = set()
        for item in items.values():
            for code in item.barcodes:
                if code in by_barcode:
                    claimed_twice.add(code)
                    problems.append(f"barcode {code}: items {by_barcode[code]} and {item.sku}")
                by_barcode[code] = item.sku
        for code in claimed_twice:
            del by_barcode[code]
        meal_limit = config.get("meal_limit", 1)
        if not isinstance(meal_limit, int) or isinstance(meal_limit, bool) or meal_limit < 0:
            problems.append(f"meal_limit: {meal_limit!r}")
            meal_limit = 1
        operators = _operators(config.get("operators"), problems)
        operator_cards = [*(config.get("operator_cards") or []), *operators]
        typed_cap = config.get("max_typed_amount_fen")
        try:
            typed_cap = None if typed_cap is None else _fen(typed_cap)
        except ValueError:
            problems.append(f"max_typed_amount_fen: {typed_cap!r} (no typed amount allowed)")
            typed_cap = 0
        return cls(
            canteen_id=canteen_id,
            unit_id=str(config.get("unit_id", "")),
            meals=tuple(sorted(meals, key=lambda p: p.start_min)),
            meal_limit=meal_limit,
            items=items,
            allow_uid_only=bool(config.get("allow_uid_only", True)),
            allow_typed_amount=bool(config.get("allow_typed_amount", True)),
            max_typed_amount_fen=typed_cap,
            operator_cards=frozenset(c for c in operator_cards if isinstance(c, str)),
            problems=tuple(problems),
            above_reference=frozenset(above_reference),
            by_barcode=by_barcode,
            refused_barcodes=refused_barcodes,
            operators=operators,
        )

    def period_at(self, now_ms: int) -> MealPeriod | None:
        minute = china_minute_of_day(now_ms)
        for p in self.meals:
            if p.contains(minute):
                return p
        return None


def _fen(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not an amount in fen: {value!r}")
    return value


def _barcodes(sku: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    """An item's barcodes, normalized; a bad one is left out and noted."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(f"item {sku}: barcodes is not a list")
        return ()
    out: list[str] = []
    for code in value:
        try:
            normal = normalize(code)
        except BarcodeError as exc:
            problems.append(f"item {sku}: {exc}")
            continue
        if normal not in out:
            out.append(normal)
    return tuple(out)


def _operators(value: Any, problems: list[str]) -> dict[str, Operator]:
    """The canteen's operators; a malformed entry is left out and noted."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append("operators is not a map")
        return {}
    out: dict[str, Operator] = {}
    for card, op in value.items():
        if isinstance(op, dict) and isinstance(op.get("name"), str) and isinstance(op.get("pin_hash"), str):
            out[card] = Operator(card, op["name"], op["pin_hash"])
        else:
            problems.append(f"operator {card}: needs name and pin_hash")
    return out
