"""Message bodies of protocol v1 and their strict decoders.

* :class:`SaleBatch` (terminal → server): one or more :class:`Sale` records, each identified
  by ``terminal_id`` + ``seq`` (per-terminal, gap-free, from 1) and a ``uuid``.
* :class:`Ack` (server → one terminal): a :class:`SaleResult` per sale — ``applied``,
  ``duplicate`` (with the first result) or ``rejected`` (with a reason code) — plus the
  cardholder's balance after the server applied it.
* :class:`Status` (terminal → server, retained; the broker's last will says ``offline``).
* :class:`Delta` (server → all terminals): numbered changes; ``version`` increases by one.
  Change kinds: ``holder``, ``card``, ``canteen``, ``settings``, and ``face`` (an enrolled
  face's 128-d encoding as base64 float32, see :mod:`shared.protocol.face_vector`; a null
  ``encoding`` deletes it).
* :class:`Snapshot` (server → one terminal over HTTP): the whole cache at one version.
* :class:`ServerStatus` (server → all terminals, retained): the server's presence,
  ``online`` every ``heartbeat_s`` seconds, ``offline`` as its last will.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shared.protocol.codec import (
    ProtocolError,
    obj,
    only_keys,
    opt_int,
    opt_str,
    req_bool,
    req_enum,
    req_int,
    req_list,
    req_str,
)
from shared.protocol.face_vector import encoding_from_str

METHODS = frozenset({"card", "qr", "face", "ecny"})
SALE_KINDS = frozenset({"meal", "shop"})
MEAL_PERIODS = frozenset({"breakfast", "lunch", "dinner"})
RESULT_STATUSES = frozenset({"applied", "duplicate", "rejected"})
TERMINAL_STATES = frozenset({"online", "offline"})
CARD_STATUSES = frozenset({"active", "lost", "retired"})
MAX_SALES_PER_BATCH = 1000
MAX_ITEMS_PER_SALE = 100
MAX_SALE_FEN = 10_000_000  # ¥100,000: a sanity bound on the wire; canteen limits are far lower
_I = -(2**53)  # balances may be negative (a recorded offline overdraft)


@dataclass(frozen=True)
class Item:
    sku: str
    qty: int
    unit_price_fen: int

    @classmethod
    def from_dict(cls, d: Any) -> Item:
        d = obj(d, "item")
        only_keys(d, frozenset({"sku", "qty", "unit_price_fen"}), "item")
        return cls(
            sku=req_str(d, "sku", max_len=64),
            qty=req_int(d, "qty", lo=1, hi=1000),
            unit_price_fen=req_int(d, "unit_price_fen", lo=0, hi=MAX_SALE_FEN),
        )


@dataclass(frozen=True)
class Sale:
    """One approved sale as journaled by a terminal. ``subsidy_fen``/``self_fen`` are the
    terminal's split; the server recomputes it from its own balances and reports back."""

    terminal_id: str
    seq: int
    uuid: str
    card_id: str | None
    canteen_id: str
    amount_fen: int
    occurred_at_ms: int
    method: str = "card"
    kind: str = "meal"
    meal_period: str | None = None
    items: tuple[Item, ...] = ()
    offline: bool = False
    visitor: bool = False
    subsidy_fen: int = 0
    self_fen: int = 0
    credential: str | None = None

    @property
    def sale_id(self) -> str:
        return f"{self.terminal_id}/{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["items"] = [asdict(i) for i in self.items]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Sale:
        d = obj(d, "sale")
        only_keys(d, _SALE_KEYS, "sale")
        items = tuple(
            Item.from_dict(i) for i in req_list(d, "items", max_len=MAX_ITEMS_PER_SALE)
        )
        sale = cls(
            terminal_id=req_str(d, "terminal_id", max_len=64),
            seq=req_int(d, "seq", lo=1),
            uuid=req_str(d, "uuid", max_len=64),
            card_id=opt_str(d, "card_id", max_len=64),
            canteen_id=req_str(d, "canteen_id", max_len=64),
            amount_fen=req_int(d, "amount_fen", lo=1, hi=MAX_SALE_FEN),
            occurred_at_ms=req_int(d, "occurred_at_ms"),
            method=req_enum(d, "method", METHODS),
            kind=req_enum(d, "kind", SALE_KINDS),
            meal_period=opt_str(d, "meal_period", max_len=16),
            items=items,
            offline=req_bool(d, "offline"),
            visitor=req_bool(d, "visitor"),
            subsidy_fen=req_int(d, "subsidy_fen", lo=0, hi=MAX_SALE_FEN),
            self_fen=req_int(d, "self_fen", lo=0, hi=MAX_SALE_FEN),
            credential=opt_str(d, "credential", max_len=256),
        )
        sale.validate()
        return sale

    def validate(self) -> None:
        if self.meal_period is not None and self.meal_period not in MEAL_PERIODS:
            raise ProtocolError("bad_field", f"meal_period: {self.meal_period!r}")
        if self.kind == "meal" and self.meal_period is None:
            raise ProtocolError("bad_field", "meal_period: required for a meal")
        if self.items and sum(i.qty * i.unit_price_fen for i in self.items) != self.amount_fen:
            raise ProtocolError("bad_field", "amount_fen: does not equal the items' total")
        if self.method == "ecny":
            if self.subsidy_fen or self.self_fen:
                raise ProtocolError("bad_field", "digital RMB sales do not touch the purses")
        else:
            if self.card_id is None:
                raise ProtocolError("bad_field", "card_id: required")
            if self.subsidy_fen + self.self_fen != self.amount_fen:
                raise ProtocolError("bad_field", "subsidy_fen + self_fen must equal amount_fen")


_SALE_KEYS = frozenset(Sale.__dataclass_fields__)


@dataclass(frozen=True)
class SaleBatch:
    sales: tuple[Sale, ...]

    def to_body(self) -> dict[str, Any]:
        return {"sales": [s.to_dict() for s in self.sales]}

    @classmethod
    def from_body(cls, body: dict[str, Any], sender: str) -> SaleBatch:
        only_keys(body, frozenset({"sales"}), "body")
        raw = req_list(body, "sales", max_len=MAX_SALES_PER_BATCH)
        if not raw:
            raise ProtocolError("bad_field", "sales: empty batch")
        sales = tuple(Sale.from_dict(s) for s in raw)
        for s in sales:
            if s.terminal_id != sender:
                raise ProtocolError("terminal_mismatch", f"sale {s.sale_id} sent by {sender}")
        return cls(sales)


@dataclass(frozen=True)
class Balance:
    """A cardholder's purses as the server knows them, at delta ``version``."""

    subsidy_fen: int
    self_fen: int
    version: int

    @classmethod
    def from_dict(cls, d: Any) -> Balance:
        d = obj(d, "balance")
        only_keys(d, frozenset({"subsidy_fen", "self_fen", "version"}), "balance")
        return cls(
            subsidy_fen=req_int(d, "subsidy_fen", lo=_I),
            self_fen=req_int(d, "self_fen", lo=_I),
            version=req_int(d, "version"),
        )


@dataclass(frozen=True)
class SaleResult:
    terminal_id: str
    seq: int
    uuid: str
    status: str
    reason: str | None = None
    subsidy_fen: int = 0
    self_fen: int = 0
    overdraft_fen: int = 0
    holder_id: str | None = None
    balance: Balance | None = None

    @property
    def rejected(self) -> bool:
        """The server did not apply the sale: rejected now, or a duplicate whose first
        result was a rejection (a duplicate repeats the first result's reason)."""
        return self.status == "rejected" or (self.status == "duplicate" and bool(self.reason))

    def to_dict(self) -> dict[str, Any]:
        # written out rather than dataclasses.asdict: the server builds one per sale on its
        # hot path, and asdict's recursive deep copy was a tenth of the ingest time
        b = self.balance
        return {
            "terminal_id": self.terminal_id,
            "seq": self.seq,
            "uuid": self.uuid,
            "status": self.status,
            "reason": self.reason,
            "subsidy_fen": self.subsidy_fen,
            "self_fen": self.self_fen,
            "overdraft_fen": self.overdraft_fen,
            "holder_id": self.holder_id,
            "balance": None if b is None else {"subsidy_fen": b.subsidy_fen, "self_fen": b.self_fen, "version": b.version},
        }

    @classmethod
    def from_dict(cls, d: Any) -> SaleResult:
        d = obj(d, "result")
        only_keys(d, frozenset(cls.__dataclass_fields__), "result")
        return cls(
            terminal_id=req_str(d, "terminal_id", max_len=64),
            seq=req_int(d, "seq", lo=1),
            uuid=req_str(d, "uuid", max_len=64),
            status=req_enum(d, "status", RESULT_STATUSES),
            reason=opt_str(d, "reason", max_len=64),
            subsidy_fen=req_int(d, "subsidy_fen"),
            self_fen=req_int(d, "self_fen"),
            overdraft_fen=req_int(d, "overdraft_fen"),
            holder_id=opt_str(d, "holder_id", max_len=64),
            balance=Balance.from_dict(d["balance"]) if d.get("balance") is not None else None,
        )


@dataclass(frozen=True)
class Ack:
    """The server's answer to one upstream message, sent after it committed."""

    in_reply_to: str
    results: tuple[SaleResult, ...] = ()
    reason: str | None = None  # set when the whole message was refused

    def to_body(self) -> dict[str, Any]:
        return {
            "in_reply_to": self.in_reply_to,
            "results": [r.to_dict() for r in self.results],
            "reason": self.reason,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Ack:
        only_keys(body, frozenset({"in_reply_to", "results", "reason"}), "body")
        return cls(
            in_reply_to=req_str(body, "in_reply_to", max_len=64),
            results=tuple(
                SaleResult.from_dict(r)
                for r in req_list(body, "results", max_len=MAX_SALES_PER_BATCH)
            ),
            reason=opt_str(body, "reason", max_len=64),
        )


@dataclass(frozen=True)
class Status:
    """A terminal's heartbeat. ``watermark_ms``: no unsent sale happened before this time."""

    state: str
    pending: int = 0
    watermark_ms: int | None = None
    delta_version: int = 0
    clock_ms: int = 0
    clock_offset_ms: int | None = None
    offline_since_ms: int | None = None
    software: str = ""

    def to_body(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Status:
        only_keys(body, frozenset(cls.__dataclass_fields__), "body")
        return cls(
            state=req_enum(body, "state", TERMINAL_STATES),
            pending=req_int(body, "pending"),
            watermark_ms=opt_int(body, "watermark_ms"),
            delta_version=req_int(body, "delta_version"),
            clock_ms=req_int(body, "clock_ms"),
            clock_offset_ms=opt_int(body, "clock_offset_ms", lo=_I),
            offline_since_ms=opt_int(body, "offline_since_ms"),
            software=req_str(body, "software", max_len=64, allow_empty=True),
        )


@dataclass(frozen=True)
class ServerStatus:
    """The server's presence. ``heartbeat_s``: how often an ``online`` one is repeated, so
    a terminal can tell a live server from a stale retained message."""

    state: str
    heartbeat_s: int = 10

    def to_body(self) -> dict[str, Any]:
        return {"state": self.state, "heartbeat_s": self.heartbeat_s}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ServerStatus:
        only_keys(body, frozenset({"state", "heartbeat_s"}), "body")
        return cls(state=req_enum(body, "state", TERMINAL_STATES), heartbeat_s=req_int(body, "heartbeat_s", lo=1, hi=3600))


# --- downstream ----------------------------------------------------------------------------

_CHANGE_FIELDS: dict[str, frozenset[str]] = {
    # a cardholder's purses and whether they are blocked (e.g. an uncovered overdraft);
    # after a meal sale also ``meals``: the meals the server holds for them that day (below)
    "holder": frozenset({"kind", "holder_id", "unit_id", "subsidy_fen", "self_fen", "blocked", "meals"}),
    # a card and whose it is; status "lost"/"retired" puts it on the deny-list
    "card": frozenset({"kind", "card_id", "holder_id", "status"}),
    # a canteen's rules: meal periods and prices, items, risk limits (shape owned by terminal)
    "canteen": frozenset({"kind", "canteen_id", "config"}),
    # city-wide settings for terminals
    "settings": frozenset({"kind", "config"}),
    # one enrolled face (a 128-d encoding, see face_vector); encoding null = deleted
    "face": frozenset({"kind", "face_id", "holder_id", "encoding"}),
    # a cardholder's QR payment credential (public half; see shared/paycode.py). A revoked
    # credential is sent again with expires_at_ms set to the revocation time.
    "qr_key": frozenset({"kind", "holder_id", "public_key", "expires_at_ms", "offline_allowance_fen"}),
}


def validate_change(c: Any) -> dict[str, Any]:
    c = obj(c, "change")
    kind = c.get("kind")
    allowed = _CHANGE_FIELDS.get(kind) if isinstance(kind, str) else None
    if allowed is None:
        raise ProtocolError("bad_field", f"change.kind: {kind!r}")
    only_keys(c, allowed, f"change[{kind}]")
    if kind == "holder":
        req_str(c, "holder_id", max_len=64)
        req_str(c, "unit_id", max_len=64)
        req_int(c, "subsidy_fen", lo=_I)
        req_int(c, "self_fen", lo=_I)
        req_bool(c, "blocked")
        if "meals" in c:
            validate_meals(c["meals"])
    elif kind == "card":
        req_str(c, "card_id", max_len=64)
        req_str(c, "holder_id", max_len=64)
        req_enum(c, "status", CARD_STATUSES)
    elif kind == "canteen":
        req_str(c, "canteen_id", max_len=64)
        obj(c.get("config"), "config")
    elif kind == "face":
        req_str(c, "face_id", max_len=64)
        req_str(c, "holder_id", max_len=64)
        if c.get("encoding") is not None:
            encoding_from_str(c["encoding"])
        elif "encoding" not in c:
            raise ProtocolError("bad_field", "encoding: required (null for a deletion)")
    elif kind == "qr_key":
        req_str(c, "holder_id", max_len=64)
        key = req_str(c, "public_key", max_len=64)
        if len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
            raise ProtocolError("bad_field", "qr_key.public_key: 64 lower-case hex digits")
        req_int(c, "expires_at_ms")
        req_int(c, "offline_allowance_fen", lo=0, hi=MAX_SALE_FEN)
    else:
        obj(c.get("config"), "config")
    return c


# generous bounds: a delta the server makes must always pass (it clamps counts to them)
MAX_MEAL_CANTEENS = 1000
MAX_MEALS_PER_PERIOD = 10_000


def validate_meals(m: Any) -> dict[str, Any]:
    """A holder's meals on one day (Asia/Shanghai) as the server has applied them, so that
    every terminal enforces the meal limit with the other terminals' meals counted::

        {"day": "2026-01-06", "taken": {"<canteen_id>": {"lunch": 1, "breakfast": 1}}}
    """
    m = obj(m, "meals")
    only_keys(m, frozenset({"day", "taken"}), "meals")
    day = req_str(m, "day", max_len=10)
    if len(day) != 10 or day[4] != "-" or day[7] != "-" or not _ascii_digits(day[:4] + day[5:7] + day[8:]):
        raise ProtocolError("bad_field", f"meals.day: {day!r} is not YYYY-MM-DD")
    taken = obj(m.get("taken"), "meals.taken")
    if len(taken) > MAX_MEAL_CANTEENS:
        raise ProtocolError("bad_field", f"meals.taken: more than {MAX_MEAL_CANTEENS} canteens")
    for canteen_id, periods in taken.items():
        if not canteen_id or len(canteen_id) > 64:
            raise ProtocolError("bad_field", f"meals.taken: canteen id {canteen_id!r}")
        periods = obj(periods, f"meals.taken[{canteen_id}]")
        for period in periods:
            if period not in MEAL_PERIODS:
                raise ProtocolError("bad_field", f"meals.taken[{canteen_id}]: period {period!r}")
            req_int(periods, period, lo=0, hi=MAX_MEALS_PER_PERIOD)
    return m


def _ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


@dataclass(frozen=True)
class Delta:
    version: int
    changes: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def to_body(self) -> dict[str, Any]:
        return {"version": self.version, "changes": list(self.changes)}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Delta:
        only_keys(body, frozenset({"version", "changes"}), "body")
        return cls(
            version=req_int(body, "version", lo=1),
            changes=tuple(
                validate_change(c) for c in req_list(body, "changes", max_len=1_000_000)
            ),
        )


@dataclass(frozen=True)
class Snapshot:
    """Everything a terminal caches, as of delta ``version`` (0 = nothing yet)."""

    version: int
    changes: tuple[dict[str, Any], ...]

    def to_body(self) -> dict[str, Any]:
        return {"version": self.version, "changes": list(self.changes)}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Snapshot:
        only_keys(body, frozenset({"version", "changes"}), "body")
        return cls(
            version=req_int(body, "version"),
            changes=tuple(
                validate_change(c) for c in req_list(body, "changes", max_len=1_000_000)
            ),
        )
