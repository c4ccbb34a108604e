"""Scenario files for ``canteen-sim replay``: the format, read and validated up front. Pure.

A scenario is one JSON object; every amount is in yuan with at most two decimals (read by
:func:`shared.money.parse_yuan`, so ``3.5`` and ``"3.50"`` are fine and ``3.555`` is
refused), every time is Asia/Shanghai wall time (``"2026-01-06T12:05"``)::

    {"name": "...", "description": "...",                  # optional, for people
     "settings": {"year_end_refund_to": "unit"},           # or "city_finance"
     "units":    [{"name": "市财政局", "quarterly_standard_yuan": 300}],
     "canteens": [{"name": "财政局食堂", "unit": "市财政局",
                   "operator": "湘味餐饮有限公司", "self_operated": false,
                   "terminals": 1,                          # default 1
                   "meals": {"lunch": ["11:30", "13:30", 12]},   # start, end, price
                   "visitor_prices_yuan": {"lunch": 15},    # diners of other units
                   "meal_limit": 1,                         # meals per card per period
                   "quality_bands": [[90, 100], [80, 98], [0, 95]],
                   "items": [{"sku": "tissue", "name": "抽纸", "price_yuan": 3.5,
                              "reference_price_yuan": 4, "barcodes": ["6901234567892"]}],
                   "risk": {"offline_allowance_yuan": 20, "max_offline_total_yuan": 50,
                            "max_offline_sales": 3, "max_sale_yuan": 100,
                            "max_offline_age_hours": 24, "max_denylist_age_hours": 72,
                            "max_offline_reversals": 3, "max_offline_reversal_yuan": 100},
                   "operators": [{"card": "OP1", "name": "王五", "pin": "246810"}],  # may reverse
                   "reversal_window_minutes": 10}],        # 冲正: default 10, 0 = off
     "people":   [{"card": "C001", "name": "张三", "unit": "市财政局", "pin": "135790"}],
     "events":   [{"at": "2026-01-06T12:05", "tap": {...}, "note": "why (optional)"}, ...],
     "expect":   {...}}                                     # see simulator.replay.check

Events (one kind per event, in time order; ``terminal`` picks the canteen's n-th terminal,
default 1; ``method`` is ``card`` (default) or ``qr`` — the diner's phone code; ``pin`` is
what the diner types on the keypad when a sale is above the no-PIN limit — a person's
``pin`` is the one they set on their phone)::

    allocate   {"unit", "quarter": "2026Q1", "per_person_yuan"?}   a unit's clerk
    topup      {"card", "yuan"}                                     self top-up (bank)
    tap        {"card", "canteen", "terminal"?, "method"?, "pin"?}  a meal
    buy        {"card", "canteen", "items": ["tissue", "water*2"] | "amount_yuan", "pin"?, ...}
    checkout   {"card", "canteen", "steps": ["scan 6901234567892", "qty 2", "void", ...], ...}
               the cashier in shop mode: scan a barcode, type an item code (``type 1001``),
               set the last line's quantity, void the last line, clear the basket; then the
               diner pays for the basket (``method``, ``pin``, ``terminal`` as for a tap)
    network    {"canteen", "offline_minutes", "terminal"?}          cut; healed at the end
    score      {"canteen", "quarter", "score": 0..100}              the owning unit's clerk
    settle     {"quarter", "force"?}                                quarterly settlement
    close_year {"year", "force"?}                                   year-end clearing
    lost       {"card", "new_card"?}                                挂失 (and 补卡)
    found      {"card"}                                             a lost card found again
    price      {"canteen", "sku", "price_yuan", "reference_price_yuan"?, "name"?}
    reversal   {"canteen", "operator", "pin", "terminal"?, "card"?}     冲正 on the keypad: the
               operator's card and PIN, the sale the diner's ``card`` picks (else the newest)

A problem in the file is a :class:`ScenarioError` naming where (``events[3]``) and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.books.settlement_rules import validate_bands
from server.registry.canteen_config import MEAL_PERIODS
from shared.errors import DomainError
from simulator.replay.events import EVENT_FIELDS, Event, parse_events
from simulator.replay.read import ScenarioError, as_bool, as_int, as_list, as_obj, as_pin, as_text, keys, yuan

__all__ = [
    "EVENT_FIELDS",
    "Canteen",
    "Event",
    "Person",
    "Scenario",
    "ScenarioError",
    "Unit",
    "load",
    "parse",
    "yuan",
]

REFUND_TARGETS = ("unit", "city_finance")
# scenario risk keys -> (RiskLimits field, multiplier to fen / ms; None: yuan)
RISK_KEYS: dict[str, tuple[str, int | None]] = {
    "max_sale_yuan": ("max_sale_fen", None),
    "offline_allowance_yuan": ("offline_allowance_fen", None),
    "max_offline_total_yuan": ("max_offline_total_fen", None),
    "max_offline_sales": ("max_offline_sales", 1),
    "max_unsent_sales": ("max_unsent_sales", 1),
    "max_offline_age_hours": ("max_offline_age_ms", 3_600_000),
    "max_denylist_age_hours": ("max_denylist_age_ms", 3_600_000),
    "max_clock_offset_minutes": ("max_clock_offset_ms", 60_000),
    "max_price_age_hours": ("max_price_age_ms", 3_600_000),
    "max_offline_reversals": ("max_offline_reversals", 1),
    "max_offline_reversal_yuan": ("max_offline_reversal_fen", None),
}
_TIME = re.compile(r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")


@dataclass(frozen=True)
class Unit:
    name: str
    quarterly_standard_fen: int


@dataclass(frozen=True)
class Canteen:
    name: str
    unit: str
    operator: str
    self_operated: bool
    terminals: int
    config: dict[str, Any]  # the canteen config the server stores (meals, meal_limit, risk)
    items: tuple[dict[str, Any], ...]  # {sku, name, price_fen, reference_price_fen}
    quality_bands: list[list[int]] | None


@dataclass(frozen=True)
class Person:
    card: str
    name: str
    unit: str
    pin: str | None = None  # the payment PIN the diner sets on their phone (above the no-PIN limit)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    refund_to: str
    units: tuple[Unit, ...]
    canteens: tuple[Canteen, ...]
    people: tuple[Person, ...]
    events: tuple[Event, ...]
    expect: dict[str, Any] = field(default_factory=dict)
    expect_error: dict[str, Any] | None = None

    def canteen(self, name: str) -> Canteen:
        return next(c for c in self.canteens if c.name == name)

    @property
    def cards(self) -> list[str]:
        """Every card the story uses: the people's and the replacements, in order of appearance."""
        out = [p.card for p in self.people]
        out += [e.args["new_card"] for e in self.events if e.kind == "lost" and e.args.get("new_card")]
        return out


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(str(p), f"cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ScenarioError(str(p), f"not JSON: {exc}") from exc
    return parse(raw, default_name=p.stem)


# --- the sections -------------------------------------------------------------------------


def parse(raw: Any, default_name: str = "scenario") -> Scenario:
    """Validate a scenario (already decoded JSON); raises :class:`ScenarioError`."""
    top = as_obj(raw, "scenario")
    keys(
        top,
        "scenario",
        {"units", "canteens", "people", "events"},
        {"name", "description", "settings", "expect", "expect_error"},
    )
    settings = as_obj(top.get("settings") or {}, "settings")
    keys(settings, "settings", set(), {"year_end_refund_to"})
    refund_to = settings.get("year_end_refund_to", "unit")
    if refund_to not in REFUND_TARGETS:
        raise ScenarioError(
            "settings.year_end_refund_to", f"one of {', '.join(REFUND_TARGETS)}, got {refund_to!r}"
        )
    units = _units(top["units"])
    unit_names = {u.name for u in units}
    canteens = _canteens(top["canteens"], unit_names)
    people = _people(top["people"], unit_names)
    events = parse_events(
        top["events"], {c.name: c.terminals for c in canteens}, unit_names, {p.card for p in people}
    )
    expect_error = top.get("expect_error")
    return Scenario(
        name=str(top.get("name") or default_name),
        description=str(top.get("description") or ""),
        refund_to=refund_to,
        units=units,
        canteens=canteens,
        people=people,
        events=events,
        expect=as_obj(top.get("expect") or {}, "expect"),
        expect_error=as_obj(expect_error, "expect_error") if expect_error is not None else None,
    )


def _units(raw: Any) -> tuple[Unit, ...]:
    out: list[Unit] = []
    for i, u in enumerate(as_list(raw, "units")):
        where = f"units[{i}]"
        keys(as_obj(u, where), where, {"name"}, {"quarterly_standard_yuan"})
        name = as_text(u["name"], f"{where}.name")
        if any(x.name == name for x in out):
            raise ScenarioError(where, f"unit {name!r} is listed twice")
        std = yuan(u.get("quarterly_standard_yuan", 0), f"{where}.quarterly_standard_yuan", positive=False)
        out.append(Unit(name, std))
    return tuple(out)


def _canteens(raw: Any, units: set[str]) -> tuple[Canteen, ...]:
    out: list[Canteen] = []
    for i, c in enumerate(as_list(raw, "canteens")):
        where = f"canteens[{i}]"
        keys(
            as_obj(c, where),
            where,
            {"name", "unit", "meals"},
            {
                "operator",
                "self_operated",
                "terminals",
                "visitor_prices_yuan",
                "meal_limit",
                "quality_bands",
                "items",
                "risk",
                "operators",
                "reversal_window_minutes",
            },
        )
        name = as_text(c["name"], f"{where}.name")
        if any(x.name == name for x in out):
            raise ScenarioError(where, f"canteen {name!r} is listed twice")
        unit = as_text(c["unit"], f"{where}.unit")
        if unit not in units:
            raise ScenarioError(f"{where}.unit", f"unknown unit {unit!r}")
        self_operated = as_bool(c.get("self_operated", False), f"{where}.self_operated")
        operator = as_text(c["operator"], f"{where}.operator") if "operator" in c else unit
        config: dict[str, Any] = {"meals": _meals(c["meals"], c.get("visitor_prices_yuan") or {}, where)}
        if "meal_limit" in c:
            config["meal_limit"] = as_int(c["meal_limit"], f"{where}.meal_limit", 1)
        if "risk" in c:
            config["risk"] = _risk(c["risk"], f"{where}.risk")
        if "operators" in c:  # the server keeps each PIN as a hash only
            config["operators"] = _operators(c["operators"], f"{where}.operators")
        if "reversal_window_minutes" in c:
            config["reversal_window_minutes"] = as_int(
                c["reversal_window_minutes"], f"{where}.reversal_window_minutes", 0, 1440
            )
        bands = None
        if "quality_bands" in c:
            try:
                bands = [list(b) for b in validate_bands(c["quality_bands"])]
            except DomainError as exc:
                raise ScenarioError(f"{where}.quality_bands", exc.detail) from exc
        out.append(
            Canteen(
                name=name,
                unit=unit,
                operator=operator,
                self_operated=self_operated,
                terminals=as_int(c.get("terminals", 1), f"{where}.terminals", 1, 8),
                config=config,
                items=_items(c.get("items") or [], f"{where}.items"),
                quality_bands=bands,
            )
        )
    return tuple(out)


def _meals(raw: Any, visitor: Any, where: str) -> dict[str, Any]:
    meals: dict[str, Any] = {}
    for period, spec in as_obj(raw, f"{where}.meals").items():
        w = f"{where}.meals.{period}"
        if period not in MEAL_PERIODS:
            raise ScenarioError(w, f"a meal period is one of {', '.join(MEAL_PERIODS)}")
        if not isinstance(spec, list) or len(spec) != 3:
            raise ScenarioError(w, 'write ["start", "end", price_yuan], e.g. ["11:30", "13:30", 12]')
        start, end, price = spec
        for t in (start, end):
            if not isinstance(t, str) or not _TIME.match(t):
                raise ScenarioError(w, f"{t!r} is not a time of day HH:MM")
        if start >= end:
            raise ScenarioError(w, f"start {start} is not before end {end}")
        meals[period] = {"start": start, "end": end, "price_fen": yuan(price, w), "visitor_price_fen": None}
    for period, price in as_obj(visitor, f"{where}.visitor_prices_yuan").items():
        w = f"{where}.visitor_prices_yuan.{period}"
        if period not in meals:
            raise ScenarioError(w, f"the canteen serves no {period}")
        meals[period]["visitor_price_fen"] = yuan(price, w)
    return meals


def _items(raw: Any, where: str) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    for i, it in enumerate(as_list(raw, where)):
        w = f"{where}[{i}]"
        keys(as_obj(it, w), w, {"sku", "price_yuan", "reference_price_yuan"}, {"name", "barcodes"})
        sku = as_text(it["sku"], f"{w}.sku")
        item = {
            "sku": sku,
            "name": as_text(it.get("name", sku), f"{w}.name"),
            "price_fen": yuan(it["price_yuan"], f"{w}.price_yuan"),
            "reference_price_fen": yuan(it["reference_price_yuan"], f"{w}.reference_price_yuan"),
        }
        if "barcodes" in it:  # checked by the server like a clerk's (barcode_invalid is a refusal)
            item["barcodes"] = [as_text(b, f"{w}.barcodes") for b in as_list(it["barcodes"], f"{w}.barcodes")]
        out.append(item)
    return tuple(out)


def _risk(raw: Any, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in as_obj(raw, where).items():
        if key not in RISK_KEYS:
            raise ScenarioError(f"{where}.{key}", f"unknown limit; known: {', '.join(RISK_KEYS)}")
        name, factor = RISK_KEYS[key]
        if factor is None:
            out[name] = yuan(value, f"{where}.{key}", positive=False)
        else:
            out[name] = as_int(value, f"{where}.{key}", 0) * factor
    return out


def _operators(raw: Any, where: str) -> dict[str, dict[str, str]]:
    """The canteen's operators (操作员): card → {name, pin} as the server is given them."""
    out: dict[str, dict[str, str]] = {}
    for i, op in enumerate(as_list(raw, where)):
        w = f"{where}[{i}]"
        keys(as_obj(op, w), w, {"card", "name", "pin"}, set())
        card = as_text(op["card"], f"{w}.card")
        if card in out:
            raise ScenarioError(f"{w}.card", f"operator card {card!r} is listed twice")
        out[card] = {"name": as_text(op["name"], f"{w}.name"), "pin": as_pin(op["pin"], f"{w}.pin")}
    return out


def _people(raw: Any, units: set[str]) -> tuple[Person, ...]:
    out: list[Person] = []
    cards: set[str] = set()
    for i, p in enumerate(as_list(raw, "people")):
        where = f"people[{i}]"
        keys(as_obj(p, where), where, {"card", "name", "unit"}, {"pin"})
        card = as_text(p["card"], f"{where}.card")
        if card in cards:
            raise ScenarioError(f"{where}.card", f"card {card!r} is listed twice")
        unit = as_text(p["unit"], f"{where}.unit")
        if unit not in units:
            raise ScenarioError(f"{where}.unit", f"unknown unit {unit!r}")
        cards.add(card)
        pin = as_pin(p["pin"], f"{where}.pin") if "pin" in p else None
        out.append(Person(card, as_text(p["name"], f"{where}.name"), unit, pin))
    return tuple(out)
