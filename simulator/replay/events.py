"""A scenario's events: each validated against the setup it refers to. Pure.

Every event has ``at`` (Asia/Shanghai wall time, in order), an optional ``note`` and exactly
one kind (see :data:`EVENT_FIELDS` and :mod:`simulator.replay.scenario`); cards, canteens, units,
quarters, years and yuan amounts are checked here, so a scenario error names the event
index and the reason before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from server.books.periods import parse_year
from shared.barcode import is_valid
from shared.clock import ms_from_china
from shared.errors import DomainError
from simulator.replay.read import (
    ScenarioError,
    as_bool,
    as_int,
    as_list,
    as_obj,
    as_pin,
    as_quarter,
    as_text,
    keys,
    yuan,
)

EVENT_FIELDS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (required, optional)
    "allocate": ({"unit", "quarter"}, {"per_person_yuan"}),
    "topup": ({"card", "yuan"}, set()),
    "tap": ({"card", "canteen"}, {"terminal", "method", "pin"}),
    "buy": ({"card", "canteen"}, {"items", "amount_yuan", "terminal", "method", "pin"}),
    "checkout": ({"card", "canteen", "steps"}, {"terminal", "method", "pin"}),
    "network": ({"canteen", "offline_minutes"}, {"terminal"}),
    "score": ({"canteen", "quarter", "score"}, set()),
    "settle": ({"quarter"}, {"force"}),
    "close_year": ({"year"}, {"force"}),
    "lost": ({"card"}, {"new_card"}),
    "found": ({"card"}, set()),
    "price": ({"canteen", "sku", "price_yuan"}, {"reference_price_yuan", "name"}),
    "reversal": ({"canteen", "operator", "pin"}, {"terminal", "card"}),
}
METHODS = ("card", "qr")
_ITEM = re.compile(r"^(?P<sku>[A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\*(?P<qty>\d+))?$")
# the cashier's steps of a checkout: (step, argument pattern, what to write)
STEPS = {
    "scan": (re.compile(r"^\d{8}$|^\d{12,13}$"), "scan <EAN-13, EAN-8 or UPC-A barcode>"),
    "type": (re.compile(r"^\d{1,13}$"), "type <item code or barcode, digits>"),
    "qty": (re.compile(r"^[1-9]\d{0,2}$"), "qty <1–999>"),
    "void": (None, "void"),
    "clear": (None, "clear"),
}


@dataclass(frozen=True)
class Event:
    index: int
    at: str
    at_ms: int
    kind: str
    args: dict[str, Any]  # validated; amounts already in fen (``*_fen`` keys)
    note: str = ""


def parse_events(raw: Any, terminals: dict[str, int], units: set[str], cards: set[str]) -> tuple[Event, ...]:
    """The events; ``terminals``: how many terminals each canteen (by name) has."""
    out: list[Event] = []
    known_cards = set(cards)
    last_ms: int | None = None
    for i, e in enumerate(as_list(raw, "events")):
        where = f"events[{i}]"
        as_obj(e, where)
        kinds = [k for k in e if k not in ("at", "note")]
        if len(kinds) != 1 or kinds[0] not in EVENT_FIELDS:
            raise ScenarioError(
                where, f"one event kind per event, one of {', '.join(EVENT_FIELDS)}; got {kinds}"
            )
        kind = kinds[0]
        if "at" not in e:
            raise ScenarioError(where, "missing at (a time like 2026-01-06T12:05)")
        try:
            at_ms = ms_from_china(e["at"])
        except (TypeError, ValueError) as exc:
            raise ScenarioError(f"{where}.at", f"{e['at']!r} is not a time like 2026-01-06T12:05") from exc
        if last_ms is not None and at_ms < last_ms:
            raise ScenarioError(
                f"{where}.at", f"{e['at']} is before the previous event; events run in time order"
            )
        last_ms = at_ms
        w = f"{where} ({kind})"
        args = _event_args(kind, as_obj(e[kind], w), w, terminals, units, known_cards)
        if kind == "lost" and args.get("new_card"):
            known_cards.add(args["new_card"])
        out.append(Event(i, e["at"], at_ms, kind, args, str(e.get("note") or "")))
    return tuple(out)


def _known(d: dict[str, Any], key: str, w: str, known: Container[str]) -> str:
    """``d[key]``, a name the scenario declared (one of ``known``)."""
    value = as_text(d[key], f"{w}.{key}")
    if value not in known:
        raise ScenarioError(w, f"unknown {key} {value!r}")
    return value


def _event_args(
    kind: str, d: dict[str, Any], w: str, terminals: dict[str, int], units: set[str], cards: set[str]
) -> dict[str, Any]:
    required, optional = EVENT_FIELDS[kind]
    keys(d, w, required, optional)
    args: dict[str, Any] = {}
    if "card" in d:
        args["card"] = _known(d, "card", w, cards)
    if "canteen" in d:
        args["canteen"] = _known(d, "canteen", w, terminals)
        if "terminal" in d:
            args["terminal"] = as_int(d["terminal"], f"{w}.terminal", 1, terminals[args["canteen"]])
    if "unit" in d:
        args["unit"] = _known(d, "unit", w, units)
    if "quarter" in d:
        args["quarter"] = as_quarter(d["quarter"], f"{w}.quarter")
    if "force" in d:
        args["force"] = as_bool(d["force"], f"{w}.force")
    if "pin" in d:
        args["pin"] = as_pin(d["pin"], f"{w}.pin")
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
    elif kind == "checkout":
        args["steps"] = _steps(d["steps"], f"{w}.steps")
    elif kind == "network":
        args["offline_minutes"] = as_int(d["offline_minutes"], f"{w}.offline_minutes", 1)
    elif kind == "score":
        args["score"] = as_int(d["score"], f"{w}.score", 0, 100)
    elif kind == "close_year":
        try:
            args["year"] = parse_year(d["year"])
        except DomainError as exc:
            raise ScenarioError(f"{w}.year", exc.detail) from exc
    elif kind == "lost" and "new_card" in d:
        args["new_card"] = as_text(d["new_card"], f"{w}.new_card")
        if args["new_card"] in cards:
            raise ScenarioError(w, f"card {args['new_card']!r} already exists")
    elif kind == "reversal":
        args["operator"] = as_text(d["operator"], f"{w}.operator")
    elif kind == "price":
        args["sku"] = as_text(d["sku"], f"{w}.sku")
        args["price_fen"] = yuan(d["price_yuan"], f"{w}.price_yuan")
        if "reference_price_yuan" in d:
            args["reference_price_fen"] = yuan(d["reference_price_yuan"], f"{w}.reference_price_yuan")
        if "name" in d:
            args["name"] = as_text(d["name"], f"{w}.name")
    return args


def _steps(raw: Any, where: str) -> tuple[tuple[str, str], ...]:
    """The cashier's steps, each ``(step, argument)``; a scanned barcode must carry a
    valid check digit (the scanner would not read it as a product otherwise)."""
    out: list[tuple[str, str]] = []
    for i, text in enumerate(as_list(raw, where)):
        w = f"{where}[{i}]"
        step, _, arg = as_text(text, w).strip().partition(" ")
        if step not in STEPS:
            raise ScenarioError(w, f"{text!r}: one of {'; '.join(h for _, h in STEPS.values())}")
        pattern, hint = STEPS[step]
        arg = arg.strip()
        if (pattern is None and arg) or (pattern is not None and not pattern.match(arg)):
            raise ScenarioError(w, f"{text!r}: write {hint}")
        if step == "scan" and not is_valid(arg):
            raise ScenarioError(w, f"{arg}: not a barcode with a valid check digit")
        out.append((step, arg))
    if not out:
        raise ScenarioError(where, "a checkout needs at least one step")
    return tuple(out)


def _basket(raw: Any, where: str) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for word in as_list(raw, where):
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
