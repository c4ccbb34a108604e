"""A canteen's rules as terminals read them: validation and the shop-price rule. Pure.

The config is the JSON ``terminal/rules.py`` parses (方案 三.5: each unit sets its own
canteen's rules and prices)::

    {"meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200,
                         "visitor_price_fen": 1500}},
     "meal_limit": 1,
     "items": {"tissue": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400}},
     "allow_uid_only": true,
     "risk": {"max_sale_fen": 10000}}

Rules enforced here, before anything is stored or sent to a terminal:

* meal periods are ``breakfast``/``lunch``/``dinner`` (the protocol's names) with
  ``HH:MM`` times, start before end, periods not overlapping, prices > 0 fen;
* a shop item has a name, a price and a reference big-store price, and its price may not
  exceed the reference price (第十条: 不得高于市内大型商场同类商品价格) —
  ``price_above_reference``, checked by :func:`check_item_price`;
* a shop item may carry ``barcodes``: EAN-13, EAN-8 or UPC-A with a right check digit
  (:mod:`shared.barcode`; a UPC-A is stored as its EAN-13), several per item, each
  belonging to one item of the canteen only — ``barcode_invalid`` / ``barcode_taken``;
* ``meal_limit`` ≥ 1; ``risk`` is a map of limit name → int ≥ 0;
* the cashier's typed amount (自由金额, shop mode): ``allow_typed_amount`` (true unless set
  false) and its cap ``max_typed_amount_fen`` (> 0 fen, optional) — :func:`validate_typed_amount`.
* ``meal_limit`` ≥ 1; ``risk`` is a map of limit name → int ≥ 0.
* reversals (冲正, issue 13): ``reversal_window_minutes`` 0–1440 (default 10, 0 = off;
  :mod:`shared.reversal_rules`) and ``operators``, the operator cards that may reverse a
  sale at the canteen's terminals — card → ``{"name", "pin_hash"}``, the operator's PIN as a
  salted scrypt record (:mod:`shared.pin_hash`; never the PIN:
  :func:`server.registry.canteen_operators.hash_operator_pins` turns a typed ``pin`` into it).

:func:`merge_config` applies a partial change (``None`` removes a meal period or an item)
and validates the result as a whole, so a change is either entirely valid or refused.
"""

from __future__ import annotations

import re
from typing import Any

from shared.barcode import BarcodeError, normalize
from shared.errors import DomainError
from shared.money import format_fen
from shared.pin_hash import is_pin_record
from shared.reversal_rules import MAX_WINDOW_MINUTES

MEAL_PERIODS = ("breakfast", "lunch", "dinner")
MEAL_NAMES_ZH = {"breakfast": "早餐", "lunch": "中餐", "dinner": "晚餐"}
DEFAULT_TIMES = {"breakfast": ("07:00", "09:00"), "lunch": ("11:30", "13:30"), "dinner": ("17:30", "19:30")}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_KNOWN_KEYS = {
    "meals",
    "meal_limit",
    "items",
    "allow_uid_only",
    "risk",
    "reversal_window_minutes",
    "operators",
    # the cashier's typed amount (issue 13)
    "allow_typed_amount",
    "max_typed_amount_fen",
}
MAX_BARCODES_PER_ITEM = 20


def _bad(detail: str) -> DomainError:
    return DomainError("invalid_input", detail)


def minutes(hhmm: str) -> int:
    """'07:30' → 450. Refuses anything that is not a time of day (24:00 allowed as an end)."""
    m = _TIME.match(hhmm.strip()) if isinstance(hhmm, str) else None
    if not m or int(m.group(2)) > 59 or int(m.group(1)) * 60 + int(m.group(2)) > 24 * 60:
        raise _bad(f"{hhmm!r} is not a time of day (HH:MM)")
    return int(m.group(1)) * 60 + int(m.group(2))


def hhmm(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


def _fen(value: Any, what: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _bad(f"{what} must be a positive whole number of fen, got {value!r}")
    return value


def check_item_price(sku: str, price_fen: int, reference_price_fen: int) -> None:
    """第十条: a shop price may not exceed the big-store reference price."""
    if price_fen > reference_price_fen:
        raise DomainError(
            "price_above_reference",
            f"{sku}: {format_fen(price_fen)} is above the reference price {format_fen(reference_price_fen)}",
        )


def validate_meal(name: str, meal: Any) -> dict[str, Any]:
    if name not in MEAL_PERIODS:
        raise _bad(f"meal period {name!r}: use one of {', '.join(MEAL_PERIODS)}")
    if not isinstance(meal, dict):
        raise _bad(f"meal period {name}: an object is required")
    unknown = set(meal) - {"start", "end", "price_fen", "visitor_price_fen"}
    if unknown:
        raise _bad(f"meal period {name}: unknown field(s) {', '.join(sorted(unknown))}")
    start, end = minutes(meal.get("start", "")), minutes(meal.get("end", ""))
    if start >= end:
        raise _bad(f"meal period {name}: start {hhmm(start)} is not before end {hhmm(end)}")
    return {
        "start": hhmm(start),
        "end": hhmm(end),
        "price_fen": _fen(meal.get("price_fen"), f"{name} price"),
        "visitor_price_fen": _fen(meal.get("visitor_price_fen"), f"{name} visitor price", optional=True),
    }


def validate_item(sku: str, item: Any) -> dict[str, Any]:
    if not isinstance(sku, str) or not _SKU.match(sku):
        raise _bad(f"item code {sku!r}: letters, digits, '_', '-', '.' (at most 64)")
    if not isinstance(item, dict):
        raise _bad(f"item {sku}: an object is required")
    unknown = set(item) - {"name", "price_fen", "reference_price_fen", "barcodes"}
    if unknown:
        raise _bad(f"item {sku}: unknown field(s) {', '.join(sorted(unknown))}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(f"item {sku}: a name is required")
    price = _fen(item.get("price_fen"), f"item {sku} price")
    reference = _fen(item.get("reference_price_fen"), f"item {sku} reference price")
    assert price is not None and reference is not None
    check_item_price(sku, price, reference)
    out: dict[str, Any] = {"name": name.strip(), "price_fen": price, "reference_price_fen": reference}
    barcodes = item_barcodes(sku, item.get("barcodes"))
    if barcodes:
        out["barcodes"] = barcodes
    return out


def item_barcodes(sku: str, value: Any) -> list[str]:
    """An item's barcodes, each normalized (UPC-A → EAN-13), duplicates dropped, order kept."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_BARCODES_PER_ITEM:
        raise _bad(f"item {sku}: barcodes must be a list of at most {MAX_BARCODES_PER_ITEM}")
    out: list[str] = []
    for code in value:
        try:
            normal = normalize(code)
        except BarcodeError as exc:
            raise DomainError("barcode_invalid", f"item {sku}: {exc}") from None
        if normal not in out:
            out.append(normal)
    return out


def check_barcodes_unique(items: dict[str, dict[str, Any]]) -> None:
    """A barcode belongs to one item of a canteen (``items`` already validated)."""
    owner: dict[str, str] = {}
    for sku, item in items.items():
        for code in item.get("barcodes", ()):
            if code in owner:
                raise DomainError("barcode_taken", f"{code}: {owner[code]} and {sku}")
            owner[code] = sku


def validate_config(config: Any) -> dict[str, Any]:
    """The whole config, normalized; raises ``invalid_input`` / ``price_above_reference``."""
    if not isinstance(config, dict):
        raise _bad("canteen config must be an object")
    unknown = set(config) - _KNOWN_KEYS
    if unknown:
        raise _bad(f"canteen config: unknown key(s) {', '.join(sorted(unknown))}")
    meals_in = config.get("meals") or {}
    items_in = config.get("items") or {}
    if not isinstance(meals_in, dict) or not isinstance(items_in, dict):
        raise _bad("meals and items must be objects")
    meals = {name: validate_meal(name, meals_in[name]) for name in MEAL_PERIODS if name in meals_in}
    for name in set(meals_in) - set(meals):
        validate_meal(name, meals_in[name])  # raises: unknown period name
    spans = sorted((minutes(m["start"]), minutes(m["end"]), n) for n, m in meals.items())
    for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:], strict=False):
        if start_b < end_a:
            raise _bad(f"meal periods {a} and {b} overlap")
    meal_limit = config.get("meal_limit", 1)
    if not isinstance(meal_limit, int) or isinstance(meal_limit, bool) or meal_limit < 1:
        raise _bad("meal_limit must be a whole number ≥ 1")
    allow_uid_only = config.get("allow_uid_only", True)
    if not isinstance(allow_uid_only, bool):
        raise _bad("allow_uid_only must be true or false")
    risk = config.get("risk") or {}
    if not isinstance(risk, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in risk.items()
    ):
        raise _bad("risk must map limit names to whole numbers ≥ 0")
    items = {sku: validate_item(sku, items_in[sku]) for sku in sorted(items_in)}
    check_barcodes_unique(items)
    out: dict[str, Any] = {
        "meals": meals,
        "meal_limit": meal_limit,
        "items": items,
        "allow_uid_only": allow_uid_only,
    }
    if risk:
        out["risk"] = dict(risk)
    if "reversal_window_minutes" in config:
        window = config["reversal_window_minutes"]
        if not isinstance(window, int) or isinstance(window, bool) or not 0 <= window <= MAX_WINDOW_MINUTES:
            raise _bad(f"reversal_window_minutes must be a whole number 0–{MAX_WINDOW_MINUTES}")
        out["reversal_window_minutes"] = window
    operators = validate_operators(config.get("operators"))
    if operators:
        out["operators"] = operators
    out.update(validate_typed_amount(config))
    return out


def validate_typed_amount(config: dict[str, Any]) -> dict[str, Any]:
    """The typed-amount keys of a config, checked (only those it sets)."""
    out: dict[str, Any] = {}
    if "allow_typed_amount" in config:
        if not isinstance(config["allow_typed_amount"], bool):
            raise _bad("allow_typed_amount must be true or false")
        out["allow_typed_amount"] = config["allow_typed_amount"]
    if config.get("max_typed_amount_fen") is not None:
        out["max_typed_amount_fen"] = _fen(config["max_typed_amount_fen"], "max_typed_amount_fen")
    return out


def validate_operators(value: Any) -> dict[str, dict[str, str]]:
    """Operator card → ``{"name", "pin_hash"}``, each PIN already a hash record."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("operators must map operator card numbers to {name, pin_hash}")
    out: dict[str, dict[str, str]] = {}
    for card, op in sorted(value.items()):
        if not isinstance(card, str) or not card.strip() or len(card) > 64:
            raise _bad(f"operator card {card!r}: 1 to 64 characters")
        if not isinstance(op, dict) or set(op) != {"name", "pin_hash"}:
            raise _bad(f"operator {card}: give name and pin (stored as pin_hash)")
        name = op["name"]
        if not isinstance(name, str) or not name.strip():
            raise _bad(f"operator {card}: a name is required")
        if not is_pin_record(op["pin_hash"]):
            raise _bad(f"operator {card}: pin_hash is not a PIN hash record")
        out[card] = {"name": name.strip(), "pin_hash": op["pin_hash"]}
    return out


def merge_config(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``change`` applied: ``meals``/``items`` merge per period/sku (a
    ``None`` value removes one), other keys replace. The result is validated whole."""
    if not isinstance(change, dict):
        raise _bad("canteen config change must be an object")
    merged = {k: v for k, v in current.items() if k in _KNOWN_KEYS}
    for key, value in change.items():
        if key in ("meals", "items", "operators"):
            if not isinstance(value, dict):
                raise _bad(f"{key} must be an object")
            part = dict(merged.get(key) or {})
            for name, entry in value.items():
                if entry is None:
                    part.pop(name, None)
                else:
                    part[name] = entry
            merged[key] = part
        else:
            merged[key] = value
    return validate_config(merged)
