"""Terminals' day closes (日结, Z-reports) as the server receives and checks them.

An operator closes the day on a terminal (:mod:`terminal.day_close`): the Z-report covers
the terminal's sales with ``seq_from ≤ seq ≤ seq_to`` and says what the till took. The
terminal sends it signed (``POST /api/v1/terminals/<id>/day-closes``); :func:`receive`
checks every field (the server trusts no number from a terminal: amounts within the wire's
range, the breakdowns adding up to the totals, the terminal and canteen its own), keeps it
once per (terminal, number) — a resend is answered the same, a different report under a
number already kept is refused (``day_close_conflict``) — and nothing in it moves money.

**The comparison** (:func:`compare`, pure) sets the terminal's figures against the sales
the server holds for the same sequence numbers, live, each time it is asked:

* ``waiting`` — some sales of the range have not reached the server yet (a terminal that
  closed offline): nothing to compare until they do;
* ``matched`` — the server applied exactly the sales the till took: count and amount in
  total and per payment method;
* ``mismatch`` (code ``day_close_mismatch``) — it did not: typically a sale the server
  holds for review (quarantined) or rejected, which the till counted; the differences say
  what and how much. An admin's later acceptance of a held sale turns it into ``matched``.

**Reversals** (冲正) are compared the same way, by their own sequence numbers: a close
carries ``rev_seq_from ≤ reversal seq ≤ rev_seq_to`` (the reversals the terminal made
since its previous close, :mod:`terminal.zreport`) with their count and amount, in total
and per payment method. :func:`server_reversals` reads the server's reversals of the
terminal with those numbers: one not received yet, or kept ``pending`` for its sale, makes
the close ``waiting`` (``missing_reversals``); an applied one counts; one the server
rejected is a difference (``reversal_rejected:<reason>``). A sale the server held for review
and the terminal then reversed (``quarantine_reversed``: the reversal resolved the hold,
nothing moved either way) counts as a sale taken, since its reversal counts too — the net is
the same. The ``rev_*`` fields are optional on the wire: a close made before reversals were
wired in has none, and then no reversals.

``canteen-server report day-closes`` and ``GET /api/v1/reports/day-closes`` list closes
with their status; a mismatch found on receipt is also logged (``day_close_mismatch``).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from shared.amounts import FEN_MAX
from shared.errors import DomainError
from shared.protocol.messages import METHODS, QUARANTINE_REASONS

log = logging.getLogger(__name__)

PERIODS = frozenset({"breakfast", "lunch", "dinner", "shop"})
STATUSES = ("matched", "waiting", "mismatch")
MAX_NUMBER = 2**31
MAX_SEQ = 2**62
MAX_SHOP_ITEMS = 10_000
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LINES = ("sales", "reversals", "held_by_server", "rejected_by_server")
# optional: closes made before reversals were wired in have none of them
_REV_KEYS = (
    "rev_seq_from",
    "rev_seq_to",
    "reversals_by_method",
    "reversals_rejected_by_server",
    "reversals_unsent",
)
_KEYS = frozenset(
    {
        "number",
        "terminal_id",
        "canteen_id",
        "business_day",
        "closed_at_ms",
        "closed_by",
        "seq_from",
        "seq_to",
        "first_sale_ms",
        "last_sale_ms",
        *_LINES,
        "by_period",
        "by_method",
        "shop_items",
        "unsent",
        "declines",
        "net_fen",
        *_REV_KEYS,
    }
)
# a sale the server held for review and the terminal reversed: taken, and given back
_REVERSED_HOLD = "quarantine_reversed"


@dataclass(frozen=True)
class Tally:
    count: int = 0
    amount_fen: int = 0

    def plus(self, amount_fen: int) -> Tally:
        return Tally(self.count + 1, self.amount_fen + amount_fen)

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "amount_fen": self.amount_fen}


@dataclass(frozen=True)
class Close:
    """A day close as received, checked."""

    number: int
    terminal_id: str
    canteen_id: str
    business_day: str
    closed_at_ms: int
    seq_from: int
    seq_to: int
    sales: Tally
    reversals: Tally
    by_method: dict[str, Tally]
    raw: dict[str, Any]
    rev_seq_from: int = 1
    rev_seq_to: int = 0  # an old close (no reversal range): none
    reversals_by_method: dict[str, Tally] = field(default_factory=dict)

    @property
    def expected(self) -> int:
        """How many sales the range holds (sequence numbers are gap-free per terminal)."""
        return self.seq_to - self.seq_from + 1

    @property
    def expected_reversals(self) -> int:
        """How many reversals its reversal range holds (gap-free per terminal too)."""
        return self.rev_seq_to - self.rev_seq_from + 1


@dataclass(frozen=True)
class ServerSide:
    """What the server holds for a close's range."""

    received: int = 0
    applied: Tally = Tally()
    by_method: dict[str, Tally] = field(default_factory=dict)  # applied, per payment method
    held: dict[str, Tally] = field(default_factory=dict)  # quarantined, by reason
    rejected: dict[str, Tally] = field(default_factory=dict)  # by reason
    reversals: Tally = Tally()  # applied
    reversals_received: int = 0  # decided (applied or rejected); pending ones are not
    reversals_by_method: dict[str, Tally] = field(default_factory=dict)  # applied
    reversals_rejected: dict[str, Tally] = field(default_factory=dict)  # by reason


@dataclass(frozen=True)
class ServerReversals:
    """The server's reversals of a close's reversal range."""

    decided: int = 0
    applied: Tally = Tally()
    by_method: dict[str, Tally] = field(default_factory=dict)
    rejected: dict[str, Tally] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    status: str  # matched | waiting | mismatch
    missing: int  # sales of the range the server has not received
    differences: tuple[dict[str, Any], ...]
    missing_reversals: int = 0  # reversals not received, or pending for their sale

    @property
    def code(self) -> str | None:
        return "day_close_mismatch" if self.status == "mismatch" else None


# --- reading a close ----------------------------------------------------------------------


def _bad(detail: str) -> DomainError:
    return DomainError("day_close_invalid", detail)


def _int(d: dict[str, Any], key: str, lo: int = 0, hi: int = FEN_MAX) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad(f"{key}: a whole number from {lo} to {hi}, got {value!r}")
    return value


def _text(d: dict[str, Any], key: str, max_len: int = 64) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= max_len:
        raise _bad(f"{key}: text of 1 to {max_len} characters")
    return value


def _tally(value: Any, where: str) -> Tally:
    if not isinstance(value, dict) or set(value) != {"count", "amount_fen"}:
        raise _bad(f"{where}: an object of count and amount_fen")
    return Tally(_int(value, "count"), _int(value, "amount_fen"))


def _tallies(value: Any, where: str, keys: frozenset[str]) -> dict[str, Tally]:
    if not isinstance(value, dict) or not set(value) <= keys:
        raise _bad(f"{where}: an object keyed by {', '.join(sorted(keys))}")
    return {k: _tally(v, f"{where}.{k}") for k, v in value.items()}


def _adds_up(parts: dict[str, Tally], total: Tally, where: str) -> None:
    got = Tally(sum(t.count for t in parts.values()), sum(t.amount_fen for t in parts.values()))
    if got != total:
        raise _bad(f"{where} adds up to {got.count} sales, {got.amount_fen} fen, not the total")


def parse_close(d: Any, terminal_id: str, canteen_id: str) -> Close:
    """A day close from a terminal, every field checked; ``day_close_invalid`` otherwise."""
    if not isinstance(d, dict) or not set(d) <= _KEYS or not {"number", "sales", "seq_from"} <= set(d):
        raise _bad(f"expected the fields {', '.join(sorted(_KEYS))}")
    if d.get("terminal_id") != terminal_id or d.get("canteen_id") != canteen_id:
        raise _bad(f"a close of terminal {terminal_id} at canteen {canteen_id} only")
    day = d.get("business_day")
    if not isinstance(day, str) or not _DAY.match(day):
        raise _bad("business_day: YYYY-MM-DD")
    _text(d, "closed_by")
    seq_from = _int(d, "seq_from", 1, MAX_SEQ)
    seq_to = _int(d, "seq_to", seq_from - 1, MAX_SEQ)
    lines = {key: _tally(d.get(key), key) for key in _LINES}
    by_period = _tallies(d.get("by_period"), "by_period", PERIODS)
    by_method = _tallies(d.get("by_method"), "by_method", METHODS)
    _adds_up(by_period, lines["sales"], "by_period")
    _adds_up(by_method, lines["sales"], "by_method")
    if lines["sales"].count > seq_to - seq_from + 1:
        raise _bad("more sales than sequence numbers in the range")
    items = d.get("shop_items")
    if not isinstance(items, dict) or len(items) > MAX_SHOP_ITEMS:
        raise _bad("shop_items: an object of at most 10000 items")
    for sku, item in items.items():
        if not isinstance(item, dict) or set(item) != {"name", "qty", "amount_fen"}:
            raise _bad(f"shop_items.{sku}: name, qty, amount_fen")
        _text(item, "name", 200)
        _int(item, "qty")
        _int(item, "amount_fen")
    for key in ("unsent", "declines"):
        _int(d, key)
    for key in ("first_sale_ms", "last_sale_ms"):
        if d.get(key) is not None:
            _int(d, key, -FEN_MAX, FEN_MAX)
    net = lines["sales"].amount_fen - lines["reversals"].amount_fen
    if d.get("net_fen", net) != net:
        raise _bad("net_fen is not sales minus reversals")
    rev_from, rev_to, rev_by_method = _reversal_range(d, lines["reversals"])
    return Close(
        number=_int(d, "number", 1, MAX_NUMBER),
        terminal_id=terminal_id,
        canteen_id=canteen_id,
        business_day=day,
        closed_at_ms=_int(d, "closed_at_ms", -FEN_MAX, FEN_MAX),
        seq_from=seq_from,
        seq_to=seq_to,
        sales=lines["sales"],
        reversals=lines["reversals"],
        by_method=by_method,
        raw=d,
        rev_seq_from=rev_from,
        rev_seq_to=rev_to,
        reversals_by_method=rev_by_method,
    )


def _reversal_range(d: dict[str, Any], reversals: Tally) -> tuple[int, int, dict[str, Tally]]:
    """The close's reversal range and per-method reversals, checked; an old close (none of
    the ``rev_*`` fields) covers no reversal and must count none."""
    if not any(key in d for key in _REV_KEYS):
        if reversals != Tally():
            raise _bad("reversals without rev_seq_from/rev_seq_to")
        return 1, 0, {}
    rev_from = _int(d, "rev_seq_from", 1, MAX_SEQ)
    rev_to = _int(d, "rev_seq_to", rev_from - 1, MAX_SEQ)
    by_method = _tallies(d.get("reversals_by_method"), "reversals_by_method", METHODS)
    _adds_up(by_method, reversals, "reversals_by_method")
    if reversals.count > rev_to - rev_from + 1:
        raise _bad("more reversals than reversal sequence numbers in the range")
    refused = _tally(d.get("reversals_rejected_by_server"), "reversals_rejected_by_server")
    if refused.count > reversals.count or refused.amount_fen > reversals.amount_fen:
        raise _bad("reversals_rejected_by_server exceeds the reversals")
    _int(d, "reversals_unsent")
    return rev_from, rev_to, by_method


# --- the comparison (pure) ----------------------------------------------------------------


def compare(close: Close, server: ServerSide) -> Comparison:
    """The terminal's figures against the server's for the same sales (see module doc)."""
    missing = max(close.expected - server.received, 0)
    missing_reversals = max(close.expected_reversals - server.reversals_received, 0)
    if missing or missing_reversals:
        return Comparison("waiting", missing, (), missing_reversals)
    diffs: list[dict[str, Any]] = []
    if server.applied != close.sales:
        diffs.append({"what": "sales", "terminal": close.sales.to_json(), "server": server.applied.to_json()})
    for method in sorted(set(close.by_method) | set(server.by_method)):
        mine, theirs = close.by_method.get(method, Tally()), server.by_method.get(method, Tally())
        if mine != theirs:
            diffs.append({"what": f"method:{method}", "terminal": mine.to_json(), "server": theirs.to_json()})
    if server.reversals != close.reversals:
        diffs.append(
            {"what": "reversals", "terminal": close.reversals.to_json(), "server": server.reversals.to_json()}
        )
    for method in sorted(set(close.reversals_by_method) | set(server.reversals_by_method)):
        mine = close.reversals_by_method.get(method, Tally())
        theirs = server.reversals_by_method.get(method, Tally())
        if mine != theirs:
            diffs.append(
                {"what": f"reversal_method:{method}", "terminal": mine.to_json(), "server": theirs.to_json()}
            )
    for kind, by_reason in (
        ("held", server.held),
        ("rejected", server.rejected),
        ("reversal_rejected", server.reversals_rejected),
    ):
        for reason, tally in sorted(by_reason.items()):
            diffs.append({"what": f"{kind}:{reason}", "server": tally.to_json()})
    return Comparison("mismatch" if diffs else "matched", 0, tuple(diffs))


# --- the database -------------------------------------------------------------------------


def server_reversals(conn: sqlite3.Connection, close: Close) -> ServerReversals:
    """The server's reversals of the terminal with the close's reversal sequence numbers:
    decided ones (a ``pending`` one waits for its sale: not decided), the applied ones in
    total and per method, the rejected ones by reason."""
    decided, applied = 0, Tally()
    by_method: dict[str, Tally] = {}
    rejected: dict[str, Tally] = {}
    for status, reason, method, amount in conn.execute(
        "SELECT status, reason, method, amount_fen FROM reversals "
        "WHERE terminal_id = ? AND seq BETWEEN ? AND ? AND status <> 'pending'",
        (close.terminal_id, close.rev_seq_from, close.rev_seq_to),
    ):
        decided += 1
        if status == "applied":
            applied = applied.plus(amount)
            by_method[method] = by_method.get(method, Tally()).plus(amount)
        else:
            rejected[reason or "?"] = rejected.get(reason or "?", Tally()).plus(amount)
    return ServerReversals(decided, applied, by_method, rejected)


def server_side(conn: sqlite3.Connection, close: Close) -> ServerSide:
    """The server's sales with the close's sequence numbers (sales.status: applied, or
    rejected with a reason — a quarantine reason while held for review, or
    ``quarantine_reversed``: taken, and given back by a reversal that counts in its own
    close), and its reversals (:func:`server_reversals`)."""
    received, applied = 0, Tally()
    by_method: dict[str, Tally] = {}
    held: dict[str, Tally] = {}
    rejected: dict[str, Tally] = {}
    for status, reason, method, amount in conn.execute(
        "SELECT status, reason, method, amount_fen FROM sales WHERE terminal_id = ? AND seq BETWEEN ? AND ?",
        (close.terminal_id, close.seq_from, close.seq_to),
    ):
        received += 1
        if status == "applied" or reason == _REVERSED_HOLD:
            applied = applied.plus(amount)
            by_method[method] = by_method.get(method, Tally()).plus(amount)
        else:
            bucket = held if reason in QUARANTINE_REASONS else rejected
            bucket[reason or "?"] = bucket.get(reason or "?", Tally()).plus(amount)
    rev = server_reversals(conn, close)
    return ServerSide(
        received, applied, by_method, held, rejected, rev.applied, rev.decided, rev.by_method, rev.rejected
    )


def receive(conn: sqlite3.Connection, terminal_id: str, body: Any, now_ms: int) -> dict[str, Any]:
    """Keep a terminal's day close (inside the caller's write txn) and answer with the
    comparison. A copy is answered again; a different report under its number is refused."""
    row = conn.execute("SELECT canteen_id FROM terminals WHERE id = ?", (terminal_id,)).fetchone()
    if row is None:
        raise DomainError("unknown_terminal", terminal_id)
    close = parse_close(body, terminal_id, row[0])
    text = json.dumps(close.raw, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    kept = conn.execute(
        "SELECT report_json FROM day_closes WHERE terminal_id = ? AND number = ?", (terminal_id, close.number)
    ).fetchone()
    if kept is not None and kept[0] != text:
        raise DomainError("day_close_conflict", f"{terminal_id} Z{close.number:04d}")
    if kept is None:
        conn.execute(
            "INSERT INTO day_closes(terminal_id, number, canteen_id, business_day, closed_at_ms, seq_from, "
            "seq_to, sales_count, sales_fen, reversals_count, reversals_fen, report_json, received_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                terminal_id,
                close.number,
                close.canteen_id,
                close.business_day,
                close.closed_at_ms,
                close.seq_from,
                close.seq_to,
                close.sales.count,
                close.sales.amount_fen,
                close.reversals.count,
                close.reversals.amount_fen,
                text,
                now_ms,
            ),
        )
    result = compare(close, server_side(conn, close))
    if result.status == "mismatch" and kept is None:
        log.warning(
            "day_close_mismatch: %s Z%04d (%s): %s",
            terminal_id,
            close.number,
            close.business_day,
            json.dumps(result.differences, ensure_ascii=False),
        )
    return _entry(close, result, now_ms if kept is None else None)


def _entry(close: Close, result: Comparison, received_at_ms: int | None) -> dict[str, Any]:
    return {
        "terminal_id": close.terminal_id,
        "number": close.number,
        "canteen_id": close.canteen_id,
        "business_day": close.business_day,
        "closed_at_ms": close.closed_at_ms,
        "seq_from": close.seq_from,
        "seq_to": close.seq_to,
        "sales": close.sales.to_json(),
        "reversals": close.reversals.to_json(),
        "net_fen": close.sales.amount_fen - close.reversals.amount_fen,
        "status": result.status,
        "code": result.code,
        "missing": result.missing,
        "missing_reversals": result.missing_reversals,
        "rev_seq_from": close.rev_seq_from,
        "rev_seq_to": close.rev_seq_to,
        "differences": list(result.differences),
        **({} if received_at_ms is None else {"received_at_ms": received_at_ms}),
    }


def report(
    conn: sqlite3.Connection,
    day: str | None = None,
    terminal_id: str | None = None,
    canteens: list[str] | None = None,
) -> dict[str, Any]:
    """Every kept close (of a business day, a terminal, the canteens a caller may see),
    each compared now; with the count per status."""
    sql = "SELECT terminal_id, canteen_id, report_json, received_at_ms FROM day_closes WHERE 1 = 1"
    args: list[Any] = []
    if day is not None:
        sql += " AND business_day = ?"
        args.append(day)
    if terminal_id is not None:
        sql += " AND terminal_id = ?"
        args.append(terminal_id)
    if canteens is not None:
        sql += f" AND canteen_id IN ({', '.join('?' * len(canteens))})" if canteens else " AND 1 = 0"
        args += canteens
    out = []
    for tid, cid, text, received in conn.execute(sql + " ORDER BY business_day, terminal_id, number", args):
        close = parse_close(json.loads(text), tid, cid)
        out.append(_entry(close, compare(close, server_side(conn, close)), received))
    return {
        "day": day,
        "terminal_id": terminal_id,
        "closes": out,
        "counts": {s: sum(1 for c in out if c["status"] == s) for s in STATUSES},
    }
