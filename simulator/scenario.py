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
                              "reference_price_yuan": 4}],
                   "risk": {"offline_allowance_yuan": 20, "max_offline_total_yuan": 50,
                            "max_offline_sales": 3, "max_sale_yuan": 100,
                            "max_offline_age_hours": 24, "max_denylist_age_hours": 72}}],
     "people":   [{"card": "C001", "name": "张三", "unit": "市财政局"}],
     "events":   [{"at": "2026-01-06T12:05", "tap": {...}, "note": "why (optional)"}, ...],
     "expect":   {...}}                                     # see simulator.scenario_check

Events (one kind per event, in time order; ``terminal`` picks the canteen's n-th terminal,
default 1; ``method`` is ``card`` (default) or ``qr`` — the diner's phone code)::

    allocate   {"unit", "quarter": "2026Q1", "per_person_yuan"?}   a unit's clerk
    topup      {"card", "yuan"}                                     self top-up (bank)
    tap        {"card", "canteen", "terminal"?, "method"?}          a meal
    buy        {"card", "canteen", "items": ["tissue", "water*2"] | "amount_yuan", ...}
    network    {"canteen", "offline_minutes", "terminal"?}          cut; healed at the end
    score      {"canteen", "quarter", "score": 0..100}              the owning unit's clerk
    settle     {"quarter", "force"?}                                quarterly settlement
    close_year {"year", "force"?}                                   year-end clearing
    lost       {"card", "new_card"?}                                挂失 (and 补卡)
    found      {"card"}                                             a lost card found again
    price      {"canteen", "sku", "price_yuan", "reference_price_yuan"?, "name"?}

A problem in the file is a :class:`ScenarioError` naming where (``events[3]``) and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.canteen_config import MEAL_PERIODS
from server.periods import Quarter, parse_year
from server.settlement_rules import validate_bands
from shared.clock import ms_from_china
from shared.errors import DomainError
from shared.money import parse_yuan

REFUND_TARGETS = ("unit", "city_finance")
EVENT_FIELDS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (required, optional)
    "allocate": ({"unit", "quarter"}, {"per_person_yuan"}),
    "topup": ({"card", "yuan"}, set()),
    "tap": ({"card", "canteen"}, {"terminal", "method"}),
    "buy": ({"card", "canteen"}, {"items", "amount_yuan", "terminal", "method"}),
    "network": ({"canteen", "offline_minutes"}, {"terminal"}),
    "score": ({"canteen", "quarter", "score"}, set()),
    "settle": ({"quarter"}, {"force"}),
    "close_year": ({"year"}, {"force"}),
    "lost": ({"card"}, {"new_card"}),
    "found": ({"card"}, set()),
    "price": ({"canteen", "sku", "price_yuan"}, {"reference_price_yuan", "name"}),
}
METHODS = ("card", "qr")
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
}
_TIME = re.compile(r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
_ITEM = re.compile(r"^(?P<sku>[A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\*(?P<qty>\d+))?$")


class ScenarioError(ValueError):
    """A scenario that cannot be run: ``where`` (``events[3]``, ``canteens[0].meals``) and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


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


@dataclass(frozen=True)
class Event:
    index: int
    at: str
    at_ms: int
    kind: str
    args: dict[str, Any]  # validated; amounts already in fen (``*_fen`` keys)
    note: str = ""


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


# --- small readers ------------------------------------------------------------------------


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(where, "an object is required")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ScenarioError(where, "a list is required")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(where, "non-blank text is required")
    return value.strip()


def _int(value: Any, where: str, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        raise ScenarioError(where, f"a whole number {lo}..{hi if hi is not None else ''} is required, got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(where, f"true or false is required, got {value!r}")
    return value


def yuan(value: Any, where: str, *, positive: bool = True) -> int:
    """Yuan (at most two decimals) to fen, or a ScenarioError saying what is wrong."""
    try:
        fen = parse_yuan(value)
    except DomainError as exc:
        raise ScenarioError(where, f"{value!r} is not an amount in yuan with at most two decimals") from exc
    if fen < 0 or (positive and fen == 0):
        raise ScenarioError(where, f"{value!r}: the amount must be {'above' if positive else 'at least'} zero")
    return fen


def _keys(d: dict[str, Any], where: str, required: set[str], optional: set[str]) -> None:
    missing = required - set(d)
    if missing:
        raise ScenarioError(where, f"missing {', '.join(sorted(missing))}")
    unknown = set(d) - required - optional
    if unknown:
        raise ScenarioError(where, f"unknown field(s) {', '.join(sorted(unknown))}")


def _quarter(value: Any, where: str) -> str:
    try:
        return str(Quarter.parse(value))
    except DomainError as exc:
        raise ScenarioError(where, exc.detail) from exc


# --- the sections -------------------------------------------------------------------------


def parse(raw: Any, default_name: str = "scenario") -> Scenario:
    """Validate a scenario (already decoded JSON); raises :class:`ScenarioError`."""
    top = _obj(raw, "scenario")
    _keys(top, "scenario", {"units", "canteens", "people", "events"},
          {"name", "description", "settings", "expect", "expect_error"})
    settings = _obj(top.get("settings") or {}, "settings")
    _keys(settings, "settings", set(), {"year_end_refund_to"})
    refund_to = settings.get("year_end_refund_to", "unit")
    if refund_to not in REFUND_TARGETS:
        raise ScenarioError("settings.year_end_refund_to", f"one of {', '.join(REFUND_TARGETS)}, got {refund_to!r}")
    units = _units(top["units"])
    unit_names = {u.name for u in units}
    canteens = _canteens(top["canteens"], unit_names)
    people = _people(top["people"], unit_names)
    events = _events(top["events"], {c.name: c for c in canteens}, unit_names, {p.card for p in people})
    expect_error = top.get("expect_error")
    return Scenario(
        name=str(top.get("name") or default_name),
        description=str(top.get("description") or ""),
        refund_to=refund_to,
        units=units,
        canteens=canteens,
        people=people,
        events=events,
        expect=_obj(top.get("expect") or {}, "expect"),
        expect_error=_obj(expect_error, "expect_error") if expect_error is not None else None,
    )


def _units(raw: Any) -> tuple[Unit, ...]:
    out: list[Unit] = []
    for i, u in enumerate(_list(raw, "units")):
        where = f"units[{i}]"
        _keys(_obj(u, where), where, {"name"}, {"quarterly_standard_yuan"})
        name = _text(u["name"], f"{where}.name")
        if any(x.name == name for x in out):
            raise ScenarioError(where, f"unit {name!r} is listed twice")
        std = yuan(u.get("quarterly_standard_yuan", 0), f"{where}.quarterly_standard_yuan", positive=False)
        out.append(Unit(name, std))
    return tuple(out)


def _canteens(raw: Any, units: set[str]) -> tuple[Canteen, ...]:
    out: list[Canteen] = []
    for i, c in enumerate(_list(raw, "canteens")):
        where = f"canteens[{i}]"
        _keys(_obj(c, where), where, {"name", "unit", "meals"},
              {"operator", "self_operated", "terminals", "visitor_prices_yuan", "meal_limit",
               "quality_bands", "items", "risk"})
        name = _text(c["name"], f"{where}.name")
        if any(x.name == name for x in out):
            raise ScenarioError(where, f"canteen {name!r} is listed twice")
        unit = _text(c["unit"], f"{where}.unit")
        if unit not in units:
            raise ScenarioError(f"{where}.unit", f"unknown unit {unit!r}")
        self_operated = _bool(c.get("self_operated", False), f"{where}.self_operated")
        operator = _text(c["operator"], f"{where}.operator") if "operator" in c else unit
        config: dict[str, Any] = {"meals": _meals(c["meals"], c.get("visitor_prices_yuan") or {}, where)}
        if "meal_limit" in c:
            config["meal_limit"] = _int(c["meal_limit"], f"{where}.meal_limit", 1)
        if "risk" in c:
            config["risk"] = _risk(c["risk"], f"{where}.risk")
        bands = None
        if "quality_bands" in c:
            try:
                bands = [list(b) for b in validate_bands(c["quality_bands"])]
            except DomainError as exc:
                raise ScenarioError(f"{where}.quality_bands", exc.detail) from exc
        out.append(Canteen(
            name=name, unit=unit, operator=operator, self_operated=self_operated,
            terminals=_int(c.get("terminals", 1), f"{where}.terminals", 1, 8),
            config=config, items=_items(c.get("items") or [], f"{where}.items"), quality_bands=bands,
        ))
    return tuple(out)


def _meals(raw: Any, visitor: Any, where: str) -> dict[str, Any]:
    meals: dict[str, Any] = {}
    for period, spec in _obj(raw, f"{where}.meals").items():
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
    for period, price in _obj(visitor, f"{where}.visitor_prices_yuan").items():
        w = f"{where}.visitor_prices_yuan.{period}"
        if period not in meals:
            raise ScenarioError(w, f"the canteen serves no {period}")
        meals[period]["visitor_price_fen"] = yuan(price, w)
    return meals


def _items(raw: Any, where: str) -> tuple[dict[str, Any], ...]:
    out: list[dict[str, Any]] = []
    for i, it in enumerate(_list(raw, where)):
        w = f"{where}[{i}]"
        _keys(_obj(it, w), w, {"sku", "price_yuan", "reference_price_yuan"}, {"name"})
        sku = _text(it["sku"], f"{w}.sku")
        out.append({
            "sku": sku,
            "name": _text(it.get("name", sku), f"{w}.name"),
            "price_fen": yuan(it["price_yuan"], f"{w}.price_yuan"),
            "reference_price_fen": yuan(it["reference_price_yuan"], f"{w}.reference_price_yuan"),
        })
    return tuple(out)


def _risk(raw: Any, where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in _obj(raw, where).items():
        if key not in RISK_KEYS:
            raise ScenarioError(f"{where}.{key}", f"unknown limit; known: {', '.join(RISK_KEYS)}")
        name, factor = RISK_KEYS[key]
        if factor is None:
            out[name] = yuan(value, f"{where}.{key}", positive=False)
        else:
            out[name] = _int(value, f"{where}.{key}", 0) * factor
    return out


def _people(raw: Any, units: set[str]) -> tuple[Person, ...]:
    out: list[Person] = []
    cards: set[str] = set()
    for i, p in enumerate(_list(raw, "people")):
        where = f"people[{i}]"
        _keys(_obj(p, where), where, {"card", "name", "unit"}, set())
        card = _text(p["card"], f"{where}.card")
        if card in cards:
            raise ScenarioError(f"{where}.card", f"card {card!r} is listed twice")
        unit = _text(p["unit"], f"{where}.unit")
        if unit not in units:
            raise ScenarioError(f"{where}.unit", f"unknown unit {unit!r}")
        cards.add(card)
        out.append(Person(card, _text(p["name"], f"{where}.name"), unit))
    return tuple(out)


def _events(raw: Any, canteens: dict[str, Canteen], units: set[str], cards: set[str]) -> tuple[Event, ...]:
    out: list[Event] = []
    known_cards = set(cards)
    last_ms: int | None = None
    for i, e in enumerate(_list(raw, "events")):
        where = f"events[{i}]"
        _obj(e, where)
        kinds = [k for k in e if k not in ("at", "note")]
        if len(kinds) != 1 or kinds[0] not in EVENT_FIELDS:
            raise ScenarioError(where, f"one event kind per event, one of {', '.join(EVENT_FIELDS)}; got {kinds}")
        kind = kinds[0]
        if "at" not in e:
            raise ScenarioError(where, "missing at (a time like 2026-01-06T12:05)")
        try:
            at_ms = ms_from_china(e["at"])
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"{where}.at", f"{e['at']!r} is not a time like 2026-01-06T12:05") from exc
        if last_ms is not None and at_ms < last_ms:
            raise ScenarioError(f"{where}.at", f"{e['at']} is before the previous event; events run in time order")
        last_ms = at_ms
        w = f"{where} ({kind})"
        args = _event_args(kind, _obj(e[kind], w), w, canteens, units, known_cards)
        if kind == "lost" and args.get("new_card"):
            known_cards.add(args["new_card"])
        out.append(Event(i, e["at"], at_ms, kind, args, str(e.get("note") or "")))
    return tuple(out)


def _event_args(
    kind: str, d: dict[str, Any], w: str, canteens: dict[str, Canteen], units: set[str], cards: set[str]
) -> dict[str, Any]:
    required, optional = EVENT_FIELDS[kind]
    _keys(d, w, required, optional)
    args: dict[str, Any] = {}
    if "card" in d:
        args["card"] = _text(d["card"], f"{w}.card")
        if args["card"] not in cards:
            raise ScenarioError(w, f"unknown card {args['card']!r}")
    if "canteen" in d:
        args["canteen"] = _text(d["canteen"], f"{w}.canteen")
        if args["canteen"] not in canteens:
            raise ScenarioError(w, f"unknown canteen {args['canteen']!r}")
        if "terminal" in d:
            args["terminal"] = _int(d["terminal"], f"{w}.terminal", 1, canteens[args["canteen"]].terminals)
    if "unit" in d:
        args["unit"] = _text(d["unit"], f"{w}.unit")
        if args["unit"] not in units:
            raise ScenarioError(w, f"unknown unit {args['unit']!r}")
    if "quarter" in d:
        args["quarter"] = _quarter(d["quarter"], f"{w}.quarter")
    if "force" in d:
        args["force"] = _bool(d["force"], f"{w}.force")
    if "method" in d:
        if d["method"] not in METHODS:
            raise ScenarioError(f"{w}.method", f"one of {', '.join(METHODS)}, got {d['method']!r}")
        args["method"] = d["method"]
    if kind == "allocate" and "per_person_yuan" in d:
        args["per_person_fen"] = yuan(d["per_person_yuan"], f"{w}.per_person_yuan")
    elif kind == "topup":
        args["amount_fen"] = yuan(d["yuan"], f"{w}.yuan")
    elif kind == "buy":
        if ("items" in d) == ("amount_yuan" in d):
            raise ScenarioError(w, "give either items or amount_yuan")
        if "amount_yuan" in d:
            args["amount_fen"] = yuan(d["amount_yuan"], f"{w}.amount_yuan")
        else:
            args["items"] = _basket(d["items"], f"{w}.items")
    elif kind == "network":
        args["offline_minutes"] = _int(d["offline_minutes"], f"{w}.offline_minutes", 1)
    elif kind == "score":
        args["score"] = _int(d["score"], f"{w}.score", 0, 100)
    elif kind == "close_year":
        try:
            args["year"] = parse_year(d["year"])
        except DomainError as exc:
            raise ScenarioError(f"{w}.year", exc.detail) from exc
    elif kind == "lost" and "new_card" in d:
        args["new_card"] = _text(d["new_card"], f"{w}.new_card")
        if args["new_card"] in cards:
            raise ScenarioError(w, f"card {args['new_card']!r} already exists")
    elif kind == "price":
        args["sku"] = _text(d["sku"], f"{w}.sku")
        args["price_fen"] = yuan(d["price_yuan"], f"{w}.price_yuan")
        if "reference_price_yuan" in d:
            args["reference_price_fen"] = yuan(d["reference_price_yuan"], f"{w}.reference_price_yuan")
        if "name" in d:
            args["name"] = _text(d["name"], f"{w}.name")
    return args


def _basket(raw: Any, where: str) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for word in _list(raw, where):
        m = _ITEM.match(word) if isinstance(word, str) else None
        if not m:
            raise ScenarioError(where, f"{word!r}: write an item code, or code*quantity (water*2)")
        qty = int(m.group("qty") or 1)
        if qty < 1:
            raise ScenarioError(where, f"{word!r}: the quantity must be at least 1")
        counts[m.group("sku")] = counts.get(m.group("sku"), 0) + qty
    if not counts:
        raise ScenarioError(where, "a basket needs at least one item")
    return tuple(counts.items())
