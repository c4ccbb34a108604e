"""Message bodies of protocol v1 and their strict decoders.

* :class:`SaleBatch` (terminal → server): one or more :class:`Sale` records, each identified
  by ``terminal_id`` + ``seq`` (per-terminal, gap-free, from 1) and a ``uuid``.
* :class:`Ack` (server → one terminal): a :class:`SaleResult` per sale — ``applied``,
  ``duplicate`` (with the first result), ``rejected`` (with a reason code) or
  ``quarantined`` (held for an admin's review, :data:`QUARANTINE_REASONS`) — plus the
  cardholder's balance after the server applied it.
* :class:`Status` (terminal → server, retained; the broker's last will says ``offline``).
* :class:`Delta` (server → all terminals): numbered changes; ``version`` increases by one.
  One typed record per change kind, decoded once here (:func:`decode_changes`):
  :class:`HolderChange`, :class:`CardChange`, :class:`CanteenChange`,
  :class:`SettingsChange`, :class:`FaceChange` (an enrolled face's 128-d encoding, base64
  float32 on the wire, see :mod:`shared.protocol.face_vector`; a null ``encoding`` deletes
  it) and :class:`QrKeyChange`; an unknown kind is refused (``unknown_change_kind``).
* :class:`Snapshot` (server → one terminal over HTTP): the whole cache at one version.
* :class:`ServerStatus` (server → all terminals, retained): the server's presence,
  ``online`` every ``heartbeat_s`` seconds, ``offline`` as its last will.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from shared.amounts import FEN_MAX, FEN_MIN
from shared.protocol.codec import (
    INT_MAX,
    TERMINAL_ID,
    ProtocolError,
    frozen_record,
    is_text,
    obj,
    only_keys,
    opt_int,
    opt_str,
    req_bool,
    req_enum,
    req_int,
    req_list,
    req_str,
    req_terminal_id,
)
from shared.protocol.face_vector import encoding_from_str, encoding_to_str

METHODS = frozenset({"card", "qr", "face", "ecny"})
SALE_KINDS = frozenset({"meal", "shop"})
MEAL_PERIODS = frozenset({"breakfast", "lunch", "dinner"})
RESULT_STATUSES = frozenset({"applied", "duplicate", "rejected", "quarantined"})
# Why the server held a sale back for an admin's review instead of applying it
# (server.sales.plausibility). A quarantined sale is final for the terminal like a
# rejected one (it leaves the outbox and is never resent); a copy gets ``duplicate`` with
# one of these reasons, which is how the terminal tells it from a rejection.
QUARANTINE_REASONS = frozenset(
    {
        "sale_over_limit",
        "sale_over_offline_limit",
        "sale_price_mismatch",
        "sale_unknown_item",
        "sale_unknown_meal_period",
        "sale_time_future",
        "sale_time_before_terminal",
        "sale_pin_invalid",  # above max_sale_fen without a valid, unused PIN approval (issue 12)
        "sale_typed_amount",  # a typed shop amount the canteen forbids or caps lower (issue 13)
    }
)
TERMINAL_STATES = frozenset({"online", "offline"})
CARD_STATUSES = frozenset({"active", "lost", "retired"})
MAX_SALES_PER_BATCH = 1000
MAX_ITEMS_PER_SALE = 100
MAX_SALE_FEN = 10_000_000  # ¥100,000: a sanity bound on the wire; canteen limits are far lower
_I = FEN_MIN  # balances may be negative (a recorded offline overdraft); see shared.amounts
_MAX_INT = FEN_MAX  # the largest balance carried (also req_int's default upper bound)


@dataclass(frozen=True)
class Item:
    """One line of a shop basket: ``qty`` of ``sku`` at ``unit_price_fen``, and the big-store
    reference price (第十条) the terminal's price list had for it, when it had one. The
    server checks both against the prices in force at the sale's time."""

    sku: str
    qty: int
    unit_price_fen: int
    reference_price_fen: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sku": self.sku, "qty": self.qty, "unit_price_fen": self.unit_price_fen}
        if self.reference_price_fen is not None:  # the wire of an item without one stays as it was
            d["reference_price_fen"] = self.reference_price_fen
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Item:
        if type(d) is dict and _ITEM_KEYS.issuperset(d):
            g = d.get
            sku, qty, price, ref = g("sku"), g("qty"), g("unit_price_fen"), g("reference_price_fen")
            if (  # every field as its reader below checks it, in one expression
                type(sku) is str
                and 0 < len(sku) <= 64
                and "\x00" not in sku
                and type(qty) is int
                and 1 <= qty <= 1000
                and type(price) is int
                and 0 <= price <= MAX_SALE_FEN
                and (ref is None or (type(ref) is int and 0 <= ref <= MAX_SALE_FEN))
            ):
                return cls(sku, qty, price, ref)
        return item_by_readers(d)


def item_by_readers(d: Any) -> Item:
    """An item's fields read one by one by the field readers, which name the first fault:
    the specification :meth:`Item.from_dict`'s one-expression check must match
    (``tests/test_protocol_fast_paths.py``)."""
    d = obj(d, "item")
    only_keys(d, _ITEM_KEYS, "item")
    return Item(
        sku=req_str(d, "sku", max_len=64),
        qty=req_int(d, "qty", lo=1, hi=1000),
        unit_price_fen=req_int(d, "unit_price_fen", lo=0, hi=MAX_SALE_FEN),
        reference_price_fen=opt_int(d, "reference_price_fen", lo=0, hi=MAX_SALE_FEN),
    )


_ITEM_KEYS = frozenset({"sku", "qty", "unit_price_fen", "reference_price_fen"})


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
    # the server's approval id from an online PIN check (a sale above max_sale_fen); the
    # PIN itself is never in a sale
    pin_approval: str | None = None

    @property
    def sale_id(self) -> str:
        return f"{self.terminal_id}/{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        # field by field, not asdict(): every value is a plain str/int/bool/None but the
        # items, and asdict's deep copy of them cost more than the rest of a shop sale;
        # written out (the fields in their order), which the terminal does per sale it
        # journals, rather than a getattr per name (tests/test_protocol_fast_paths.py)
        d = {
            "terminal_id": self.terminal_id,
            "seq": self.seq,
            "uuid": self.uuid,
            "card_id": self.card_id,
            "canteen_id": self.canteen_id,
            "amount_fen": self.amount_fen,
            "occurred_at_ms": self.occurred_at_ms,
            "method": self.method,
            "kind": self.kind,
            "meal_period": self.meal_period,
            "items": [i.to_dict() for i in self.items],
            "offline": self.offline,
            "visitor": self.visitor,
            "subsidy_fen": self.subsidy_fen,
            "self_fen": self.self_fen,
            "credential": self.credential,
        }
        if self.pin_approval is not None:  # the wire of a sale without a PIN stays as it was
            d["pin_approval"] = self.pin_approval
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Sale:
        d = obj(d, "sale")
        if not _SALE_KEYS.issuperset(d):
            only_keys(d, _SALE_KEYS, "sale")  # names the unknown fields
        items = tuple(Item.from_dict(i) for i in req_list(d, "items", max_len=MAX_ITEMS_PER_SALE))
        sale = _well_formed_sale(d, items) or sale_by_readers(d, items)  # readers: to name a fault
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


def sale_by_readers(d: dict[str, Any], items: tuple[Item, ...]) -> Sale:
    """A sale's fields read one by one by the field readers, which name the first fault —
    the specification the one-expression check in :func:`_well_formed_sale` must match
    (``tests/test_decode_fast_path.py``)."""
    return Sale(
        terminal_id=req_terminal_id(d, "terminal_id"),
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
        pin_approval=opt_str(d, "pin_approval", max_len=64),
    )


def _well_formed_sale(d: dict[str, Any], items: tuple[Item, ...]) -> Sale | None:
    """The sale of ``d`` when every field passes what its reader in :meth:`Sale.from_dict`
    checks (the same bounds), in one expression; else None. The server decodes every sale
    it takes in, and the readers' calls were most of that."""
    g = d.get
    t, seq, u, card, canteen = g("terminal_id"), g("seq"), g("uuid"), g("card_id"), g("canteen_id")
    amount, at, method, kind, period = (
        g("amount_fen"),
        g("occurred_at_ms"),
        g("method"),
        g("kind"),
        g("meal_period"),
    )
    offline, visitor, sub, own = g("offline"), g("visitor"), g("subsidy_fen"), g("self_fen")
    credential, pin = g("credential"), g("pin_approval")
    if (
        type(t) is str
        and TERMINAL_ID.fullmatch(t) is not None
        and type(seq) is int
        and 1 <= seq <= INT_MAX
        and is_text(u, 64)
        and (card is None or is_text(card, 64))
        and is_text(canteen, 64)
        and type(amount) is int
        and 1 <= amount <= MAX_SALE_FEN
        and type(at) is int
        and 0 <= at <= INT_MAX
        and type(method) is str
        and method in METHODS
        and type(kind) is str
        and kind in SALE_KINDS
        and (period is None or is_text(period, 16))
        and type(offline) is bool
        and type(visitor) is bool
        and type(sub) is int
        and 0 <= sub <= MAX_SALE_FEN
        and type(own) is int
        and 0 <= own <= MAX_SALE_FEN
        and (credential is None or is_text(credential, 256))
        and (pin is None or is_text(pin, 64))
    ):
        return frozen_record(  # Sale(t, seq, u, …, credential, pin), set in one step
            Sale,
            {
                "terminal_id": t,
                "seq": seq,
                "uuid": u,
                "card_id": card,
                "canteen_id": canteen,
                "amount_fen": amount,
                "occurred_at_ms": at,
                "method": method,
                "kind": kind,
                "meal_period": period,
                "items": items,
                "offline": offline,
                "visitor": visitor,
                "subsidy_fen": sub,
                "self_fen": own,
                "credential": credential,
                "pin_approval": pin,
            },
        )
    return None


_BATCH_KEYS = frozenset({"sales"})
_ACK_KEYS = frozenset({"in_reply_to", "results", "reason"})


@dataclass(frozen=True)
class SaleBatch:
    sales: tuple[Sale, ...]

    def to_body(self) -> dict[str, Any]:
        return {"sales": [s.to_dict() for s in self.sales]}

    @classmethod
    def from_body(cls, body: dict[str, Any], sender: str) -> SaleBatch:
        only_keys(body, _BATCH_KEYS, "body")
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
    """A cardholder's purses as the server knows them, at delta ``version``. With
    ``subsidy_year`` (optional: older servers send none), ``subsidy_fen`` is that year's
    subsidy and ``next_subsidy_fen`` the next year's (:func:`shared.spend_order.subsidy_for_year`)."""

    subsidy_fen: int
    self_fen: int
    version: int
    subsidy_year: int | None = None
    next_subsidy_fen: int = 0
    expired_subsidy_fen: int = 0  # earlier years' subsidy awaiting the clearing, not spendable

    @classmethod
    def from_dict(cls, d: Any) -> Balance:
        d = obj(d, "balance")
        if not _BALANCE_KEYS.issuperset(d):
            only_keys(d, _BALANCE_KEYS, "balance")  # names the unknown fields
        g = d.get
        sub, own, version = g("subsidy_fen"), g("self_fen"), g("version")
        year, nxt, expired = g("subsidy_year"), g("next_subsidy_fen"), g("expired_subsidy_fen")
        if (  # every field as its reader below checks it, in one expression (acks carry many)
            type(sub) is int
            and _I <= sub <= _MAX_INT
            and type(own) is int
            and _I <= own <= _MAX_INT
            and type(version) is int
            and 0 <= version <= INT_MAX
            and (year is None or (type(year) is int and _MIN_YEAR <= year <= _MAX_YEAR))
            and (nxt is None or (type(nxt) is int and _I <= nxt <= _MAX_INT))
            and (expired is None or (type(expired) is int and _I <= expired <= _MAX_INT))
        ):
            return frozen_record(  # cls(sub, own, version, year, nxt or 0, expired or 0)
                cls,
                {
                    "subsidy_fen": sub,
                    "self_fen": own,
                    "version": version,
                    "subsidy_year": year,
                    "next_subsidy_fen": nxt or 0,
                    "expired_subsidy_fen": expired or 0,
                },
            )
        return cls(  # the readers only to name a fault
            subsidy_fen=req_int(d, "subsidy_fen", lo=_I, hi=_MAX_INT),
            self_fen=req_int(d, "self_fen", lo=_I, hi=_MAX_INT),
            version=req_int(d, "version"),
            subsidy_year=opt_int(d, "subsidy_year", lo=_MIN_YEAR, hi=_MAX_YEAR),
            next_subsidy_fen=opt_int(d, "next_subsidy_fen", lo=_I, hi=_MAX_INT) or 0,
            expired_subsidy_fen=opt_int(d, "expired_subsidy_fen", lo=_I, hi=_MAX_INT) or 0,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "subsidy_fen": self.subsidy_fen,
            "self_fen": self.self_fen,
            "version": self.version,
        }
        if self.subsidy_year is not None:
            d["subsidy_year"] = self.subsidy_year
            d["next_subsidy_fen"] = self.next_subsidy_fen
            d["expired_subsidy_fen"] = self.expired_subsidy_fen
        return d


_BALANCE_KEYS = frozenset(
    {"subsidy_fen", "self_fen", "version", "subsidy_year", "next_subsidy_fen", "expired_subsidy_fen"}
)
_MIN_YEAR, _MAX_YEAR = 2000, 2200  # as server.books.periods.parse_year


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
    def quarantined(self) -> bool:
        """The server held the sale back for review (not applied, not to be resent): now,
        or a duplicate whose first result was a quarantine."""
        return self.status == "quarantined" or (
            self.status == "duplicate" and self.reason in QUARANTINE_REASONS
        )

    @property
    def rejected(self) -> bool:
        """The server did not apply the sale: rejected now, or a duplicate whose first
        result was a rejection (a duplicate repeats the first result's reason). A
        quarantined sale is not applied either, but is not a rejection: see
        :attr:`quarantined`."""
        if self.quarantined:
            return False
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
            "balance": None if b is None else b.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, faults: list[ProtocolError] | None = None) -> SaleResult:
        """With ``faults`` (a terminal reading an ack), a balance that will not decode is
        dropped and its error appended: the result itself still counts, and the balance
        arrives again with the next delta."""
        d = obj(d, "result")
        if not _RESULT_KEYS.issuperset(d):
            only_keys(d, _RESULT_KEYS, "result")  # names the unknown fields
        g = d.get
        t, seq, u, status, reason = g("terminal_id"), g("seq"), g("uuid"), g("status"), g("reason")
        sub, own, over, holder = g("subsidy_fen"), g("self_fen"), g("overdraft_fen"), g("holder_id")
        if (  # every field but the balance as its reader below checks it, in one expression
            type(t) is str
            and TERMINAL_ID.fullmatch(t) is not None  # also 1-32 long, no NUL
            and type(seq) is int
            and 1 <= seq <= INT_MAX
            and is_text(u, 64)
            and type(status) is str
            and status in RESULT_STATUSES
            and (reason is None or is_text(reason, 64))
            and type(sub) is int
            and 0 <= sub <= INT_MAX
            and type(own) is int
            and 0 <= own <= INT_MAX
            and type(over) is int
            and 0 <= over <= INT_MAX
            and (holder is None or is_text(holder, 64))
        ):
            return frozen_record(  # cls(t, seq, u, status, reason, sub, own, over, holder, balance)
                cls,
                {
                    "terminal_id": t,
                    "seq": seq,
                    "uuid": u,
                    "status": status,
                    "reason": reason,
                    "subsidy_fen": sub,
                    "self_fen": own,
                    "overdraft_fen": over,
                    "holder_id": holder,
                    "balance": _balance(g("balance"), faults),
                },
            )
        return cls(  # the readers only to name a fault
            terminal_id=req_terminal_id(d, "terminal_id"),
            seq=req_int(d, "seq", lo=1),
            uuid=req_str(d, "uuid", max_len=64),
            status=req_enum(d, "status", RESULT_STATUSES),
            reason=opt_str(d, "reason", max_len=64),
            subsidy_fen=req_int(d, "subsidy_fen"),
            self_fen=req_int(d, "self_fen"),
            overdraft_fen=req_int(d, "overdraft_fen"),
            holder_id=opt_str(d, "holder_id", max_len=64),
            balance=_balance(d.get("balance"), faults),
        )


_RESULT_KEYS = frozenset(SaleResult.__dataclass_fields__)


def _balance(raw: Any, faults: list[ProtocolError] | None) -> Balance | None:
    if raw is None:
        return None
    try:
        return Balance.from_dict(raw)
    except ProtocolError as exc:
        if faults is None:
            raise
        faults.append(exc)
        return None


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
    def from_body(cls, body: dict[str, Any], faults: list[ProtocolError] | None = None) -> Ack:
        """``faults``: see :meth:`SaleResult.from_dict`."""
        only_keys(body, _ACK_KEYS, "body")
        return cls(
            in_reply_to=req_str(body, "in_reply_to", max_len=64),
            results=tuple(
                SaleResult.from_dict(r, faults)
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
    # the code of the last downstream change this terminal could not read and skipped
    # (it sells on its last good state for that record); sent only when there is one
    sync_fault: str | None = None
    # a random id per terminal process: two processes running one terminal's configuration
    # show up as two instances on its status topic (empty: not sent)
    instance: str = ""
    # fleet health (issue 15), each sent only when known: the oldest unsent sale's time, the
    # last moment the cache was known current, the disk under the journal (free and total)
    # and the journal's size on disk, the terminal's last error (a stable code) and when
    oldest_unsent_ms: int | None = None
    last_sync_ms: int | None = None
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    journal_bytes: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None

    def to_body(self) -> dict[str, Any]:
        # field by field, not asdict(): every value is a plain str/int/None (no deep copy needed)
        body = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for optional in ("sync_fault", *_STATUS_HEALTH):
            if body[optional] is None:
                del body[optional]
        if not self.instance:
            del body["instance"]
        return body

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
            sync_fault=opt_str(body, "sync_fault", max_len=64),
            instance=req_str(body, "instance", max_len=32, allow_empty=True) if "instance" in body else "",
            oldest_unsent_ms=opt_int(body, "oldest_unsent_ms"),
            last_sync_ms=opt_int(body, "last_sync_ms"),
            disk_free_bytes=opt_int(body, "disk_free_bytes"),
            disk_total_bytes=opt_int(body, "disk_total_bytes"),
            journal_bytes=opt_int(body, "journal_bytes"),
            last_error=opt_str(body, "last_error", max_len=64),
            last_error_ms=opt_int(body, "last_error_ms"),
        )


# the health fields of a status, left out of the wire when unknown (an older terminal sends none)
_STATUS_HEALTH = (
    "oldest_unsent_ms",
    "last_sync_ms",
    "disk_free_bytes",
    "disk_total_bytes",
    "journal_bytes",
    "last_error",
    "last_error_ms",
)


@dataclass(frozen=True)
class ServerStatus:
    """The server's presence. ``heartbeat_s``: how often an ``online`` one is repeated, so
    a terminal can tell a live server from a stale retained message. ``boot`` names one run
    of the server process and ``seq`` counts its presence messages: with the envelope's
    signed send time they let a terminal refuse a captured ``online`` replayed later.

    ``delta_version``: the newest delta in the server's database when it was sent (None:
    not said). A terminal behind it has lost a delta that no later one revealed as a gap,
    and catches up. Left out of the wire when None: a terminal older than the field refuses
    a body with it (``only_keys``), so a server sends it only when configured to
    (``PRESENCE_DELTA_VERSION``, once every terminal reads it: docs/scaling.md)."""

    state: str
    heartbeat_s: int = 10
    boot: str = ""
    seq: int = 0
    delta_version: int | None = None

    def to_body(self) -> dict[str, Any]:
        body = {"state": self.state, "heartbeat_s": self.heartbeat_s, "boot": self.boot, "seq": self.seq}
        if self.delta_version is not None:
            body["delta_version"] = self.delta_version
        return body

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ServerStatus:
        only_keys(body, frozenset({"state", "heartbeat_s", "boot", "seq", "delta_version"}), "body")
        return cls(
            state=req_enum(body, "state", TERMINAL_STATES),
            heartbeat_s=req_int(body, "heartbeat_s", lo=1, hi=3600),
            boot=req_str(body, "boot", max_len=32),
            seq=req_int(body, "seq"),
            delta_version=opt_int(body, "delta_version"),
        )


# --- downstream ----------------------------------------------------------------------------
#
# One frozen record per change kind. :func:`decode_changes` checks wire changes and builds
# their records in the same pass, so a terminal applies typed records only; ``to_wire`` gives
# back exactly the dict that was sent.

# generous bounds: a delta the server makes must always pass (it clamps counts to them)
MAX_MEAL_CANTEENS = 1000
MAX_MEALS_PER_PERIOD = 10_000


@dataclass(frozen=True, slots=True)
class Meals:
    """A holder's meals on one day (Asia/Shanghai) as the server has applied them, so that
    every terminal enforces the meal limit with the other terminals' meals counted::

        {"day": "2026-01-06", "taken": {"<canteen_id>": {"lunch": 1, "breakfast": 1}}}
    """

    day: str
    taken: dict[str, dict[str, int]]

    def to_wire(self) -> dict[str, Any]:
        return {"day": self.day, "taken": self.taken}

    @classmethod
    def from_wire(cls, m: Any) -> Meals:
        # a holder change after every meal sale carries one: each check has a one-test
        # form for the well-formed case, the general one beside it to name a fault
        if type(m) is not dict or not _MEALS_KEYS.issuperset(m):
            m = obj(m, "meals")
            only_keys(m, _MEALS_KEYS, "meals")
        day = m.get("day")
        if type(day) is not str or _DAY.fullmatch(day) is None:
            day = req_str(m, "day", max_len=10)
            if (
                len(day) != 10
                or day[4] != "-"
                or day[7] != "-"
                or not _ascii_digits(day[:4] + day[5:7] + day[8:])
            ):
                raise ProtocolError("bad_field", f"meals.day: {day!r} is not YYYY-MM-DD")
        taken = obj(m.get("taken"), "meals.taken")
        if len(taken) > MAX_MEAL_CANTEENS:
            raise ProtocolError("bad_field", f"meals.taken: more than {MAX_MEAL_CANTEENS} canteens")
        for canteen_id, periods in taken.items():
            if not canteen_id or len(canteen_id) > 64:
                raise ProtocolError("bad_field", f"meals.taken: canteen id {canteen_id!r}")
            if type(periods) is not dict:
                periods = obj(periods, f"meals.taken[{canteen_id}]")
            for period, n in periods.items():
                if period not in MEAL_PERIODS:
                    raise ProtocolError("bad_field", f"meals.taken[{canteen_id}]: period {period!r}")
                if type(n) is not int or not 0 <= n <= MAX_MEALS_PER_PERIOD:  # the reader names why
                    req_int(periods, period, lo=0, hi=MAX_MEALS_PER_PERIOD)
        return cls(day, taken)


_MEALS_KEYS = frozenset({"day", "taken"})
# what Meals.from_wire's day checks accept of an exact str (ASCII digits are 0-9)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


@dataclass(frozen=True, slots=True)
class HolderChange:
    """A cardholder's purses and whether they are blocked (e.g. an uncovered overdraft);
    after a meal sale also their :class:`Meals` of that day. With ``subsidy_year``
    (optional: older servers send none), ``subsidy_fen`` is that year's subsidy and
    ``next_subsidy_fen`` the next year's (:func:`shared.spend_order.subsidy_for_year`)."""

    kind: ClassVar[str] = "holder"
    holder_id: str
    unit_id: str
    subsidy_fen: int
    self_fen: int
    blocked: bool
    meals: Meals | None = None
    subsidy_year: int | None = None
    next_subsidy_fen: int = 0
    expired_subsidy_fen: int = 0  # earlier years' subsidy awaiting the clearing, not spendable

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": "holder",
            "holder_id": self.holder_id,
            "unit_id": self.unit_id,
            "subsidy_fen": self.subsidy_fen,
            "self_fen": self.self_fen,
            "blocked": self.blocked,
        }
        if self.subsidy_year is not None:
            d["subsidy_year"] = self.subsidy_year
            d["next_subsidy_fen"] = self.next_subsidy_fen
            d["expired_subsidy_fen"] = self.expired_subsidy_fen
        if self.meals is not None:
            d["meals"] = self.meals.to_wire()
        return d

    @classmethod
    def from_wire(cls, c: dict[str, Any]) -> HolderChange:
        g = c.get  # one attribute lookup for the eight reads below (a snapshot has one per holder)
        h, u, sub, own, blocked = g("holder_id"), g("unit_id"), g("subsidy_fen"), g("self_fen"), g("blocked")
        # a snapshot carries one per cardholder: the well-formed case in one expression, the
        # field readers (same verdicts) only to name what is wrong
        if not (
            type(h) is str
            and 0 < len(h) <= 64
            and "\x00" not in h
            and type(u) is str
            and 0 < len(u) <= 64
            and "\x00" not in u
            and type(sub) is int
            and _I <= sub <= _MAX_INT
            and type(own) is int
            and _I <= own <= _MAX_INT
            and type(blocked) is bool
        ):
            h, u = req_str(c, "holder_id", max_len=64), req_str(c, "unit_id", max_len=64)
            sub, own, blocked = (
                req_int(c, "subsidy_fen", lo=_I, hi=_MAX_INT),
                req_int(c, "self_fen", lo=_I, hi=_MAX_INT),
                req_bool(c, "blocked"),
            )
        year, nxt, old = g("subsidy_year"), g("next_subsidy_fen", 0), g("expired_subsidy_fen", 0)
        if year is not None or nxt != 0 or old != 0:
            nxt = g("next_subsidy_fen")  # required with a year: no default here
            if not (  # every change of a server that sends years: the readers only to name a fault
                type(year) is int
                and _MIN_YEAR <= year <= _MAX_YEAR
                and type(nxt) is int
                and _I <= nxt <= _MAX_INT
                and (old is None or (type(old) is int and _I <= old <= _MAX_INT))
            ):
                year = req_int(c, "subsidy_year", lo=_MIN_YEAR, hi=_MAX_YEAR)
                nxt = req_int(c, "next_subsidy_fen", lo=_I, hi=_MAX_INT)
                old = opt_int(c, "expired_subsidy_fen", lo=_I, hi=_MAX_INT)
            old = old or 0
        meals = Meals.from_wire(c["meals"]) if "meals" in c else None
        return cls(h, u, sub, own, blocked, meals, year, nxt, old)


@dataclass(frozen=True, slots=True)
class CardChange:
    """A card and whose it is; status ``lost``/``retired`` puts it on the deny-list."""

    kind: ClassVar[str] = "card"
    card_id: str
    holder_id: str
    status: str

    def to_wire(self) -> dict[str, Any]:
        return {"kind": "card", "card_id": self.card_id, "holder_id": self.holder_id, "status": self.status}

    @classmethod
    def from_wire(cls, c: dict[str, Any]) -> CardChange:
        card_id, holder_id, status = c.get("card_id"), c.get("holder_id"), c.get("status")
        if not (  # as in HolderChange.from_wire: the readers only to name a fault
            type(card_id) is str
            and 0 < len(card_id) <= 64
            and "\x00" not in card_id
            and type(holder_id) is str
            and 0 < len(holder_id) <= 64
            and "\x00" not in holder_id
            and type(status) is str
            and status in CARD_STATUSES
        ):
            card_id, holder_id = req_str(c, "card_id", max_len=64), req_str(c, "holder_id", max_len=64)
            status = req_enum(c, "status", CARD_STATUSES)
        return cls(card_id, holder_id, status)


@dataclass(frozen=True, slots=True)
class CanteenChange:
    """A canteen's rules: meal periods and prices, shop items, risk limits. The shape of
    ``config`` is the terminal's (:class:`terminal.rules.CanteenRules`)."""

    kind: ClassVar[str] = "canteen"
    canteen_id: str
    config: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"kind": "canteen", "canteen_id": self.canteen_id, "config": self.config}

    @classmethod
    def from_wire(cls, c: dict[str, Any]) -> CanteenChange:
        return cls(req_str(c, "canteen_id", max_len=64), obj(c.get("config"), "config"))


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """City-wide settings for terminals (risk limits, face policy …)."""

    kind: ClassVar[str] = "settings"
    config: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"kind": "settings", "config": self.config}

    @classmethod
    def from_wire(cls, c: dict[str, Any]) -> SettingsChange:
        return cls(obj(c.get("config"), "config"))


@dataclass(frozen=True, slots=True)
class FaceChange:
    """One enrolled face: its 128-d encoding as the 512 raw float32 bytes (base64 on the
    wire, see :mod:`shared.protocol.face_vector`); ``encoding`` None = deleted."""

    kind: ClassVar[str] = "face"
    face_id: str
    holder_id: str
    encoding: bytes | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": "face",
            "face_id": self.face_id,
            "holder_id": self.holder_id,
            "encoding": None if self.encoding is None else encoding_to_str(self.encoding),
        }

    @classmethod
    def from_wire(cls, c: dict[str, Any]) -> FaceChange:
        face_id = req_str(c, "face_id", max_len=64)
        holder_id = req_str(c, "holder_id", max_len=64)
        if c.get("encoding") is not None:
            return cls(face_id, holder_id, encoding_from_str(c["encoding"]))
        if "encoding" not in c:
            raise ProtocolError("bad_field", "encoding: required (null for a deletion)")
        return cls(face_id, holder_id, None)


@dataclass(frozen=True, slots=True)
class QrKeyChange:
    """A cardholder's QR payment credential (public half; see :mod:`shared.paycode`). A
    revoked credential is sent again with ``expires_at_ms`` set to the revocation time."""

    kind: ClassVar[str] = "qr_key"
    holder_id: str
    public_key: str
    expires_at_ms: int
    offline_allowance_fen: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": "qr_key",
            "holder_id": self.holder_id,
            "public_key": self.public_key,
            "expires_at_ms": self.expires_at_ms,
            "offline_allowance_fen": self.offline_allowance_fen,
        }

    @classmethod
    def from_wire(cls, c: dict[str, Any]) -> QrKeyChange:
        holder_id = req_str(c, "holder_id", max_len=64)
        key = req_str(c, "public_key", max_len=64)
        if len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
            raise ProtocolError("bad_field", "qr_key.public_key: 64 lower-case hex digits")
        return cls(
            holder_id,
            key,
            req_int(c, "expires_at_ms"),
            req_int(c, "offline_allowance_fen", lo=0, hi=MAX_SALE_FEN),
        )


Change = HolderChange | CardChange | CanteenChange | SettingsChange | FaceChange | QrKeyChange
CHANGE_TYPES: tuple[type[Change], ...] = (
    HolderChange,
    CardChange,
    CanteenChange,
    SettingsChange,
    FaceChange,
    QrKeyChange,
)
# the wire fields of each kind: its record's fields and "kind"
_CHANGE_FIELDS: dict[str, frozenset[str]] = {
    t.kind: frozenset(f.name for f in fields(t)) | {"kind"} for t in CHANGE_TYPES
}
_DECODERS: dict[str, Any] = {t.kind: t.from_wire for t in CHANGE_TYPES}


def decode_changes(raw: list[Any] | tuple[Any, ...]) -> tuple[Change, ...]:
    """Wire changes, checked, as their typed records. A kind this code does not know (a
    server newer than the terminal) is refused with ``unknown_change_kind``: skipping it
    would leave the cache silently behind the server."""
    out = []
    for c in raw:  # one pass, no call per change but its kind's decoder (snapshots are large)
        if not isinstance(c, dict):
            raise ProtocolError("bad_field", "change: expected object")
        kind = c.get("kind")
        if not isinstance(kind, str):
            raise ProtocolError("bad_field", "change.kind: expected string")
        allowed = _CHANGE_FIELDS.get(kind)
        if allowed is None:
            raise ProtocolError("unknown_change_kind", f"change.kind: {kind[:64]!r}")
        if not allowed.issuperset(c):
            only_keys(c, allowed, f"change[{kind}]")  # names the unknown fields
        out.append(_DECODERS[kind](c))
    return tuple(out)


def decode_change(c: Any) -> Change:
    """One wire change, checked, as its typed record (see :func:`decode_changes`)."""
    return decode_changes((c,))[0]


def salvage_changes(raw: list[Any] | tuple[Any, ...], faults: list[ProtocolError]) -> tuple[Change, ...]:
    """For a terminal: the changes that decode, each undecodable one's error appended to
    ``faults`` instead of refusing them all — the terminal keeps its last good state for
    those records and reports the fault rather than never catching up again. An unknown
    kind is still refused (:func:`decode_changes`): that terminal needs new software."""
    try:
        return decode_changes(raw)
    except ProtocolError:
        pass
    out = []
    for c in raw:
        try:
            out.append(decode_change(c))
        except ProtocolError as exc:
            if exc.code == "unknown_change_kind":
                raise
            faults.append(exc)
    return tuple(out)


def _read_changes(body: dict[str, Any], faults: list[ProtocolError] | None) -> tuple[Change, ...]:
    raw = req_list(body, "changes", max_len=1_000_000)
    return decode_changes(raw) if faults is None else salvage_changes(raw, faults)


def _wire_change(c: Change | dict[str, Any]) -> dict[str, Any]:
    return c if type(c) is dict else c.to_wire()  # type: ignore[union-attr]


@dataclass(frozen=True)
class Delta:
    """Numbered changes. Decoded (:meth:`from_body`), ``changes`` are typed records; the
    server builds deltas straight from the wire dicts it recorded, and :meth:`to_body`
    sends either as the same wire form."""

    version: int
    changes: tuple[Change | dict[str, Any], ...] = field(default_factory=tuple)

    def to_body(self) -> dict[str, Any]:
        return {"version": self.version, "changes": [_wire_change(c) for c in self.changes]}

    @classmethod
    def from_body(cls, body: dict[str, Any], faults: list[ProtocolError] | None = None) -> Delta:
        """``faults``: skip undecodable changes, see :func:`salvage_changes`."""
        only_keys(body, frozenset({"version", "changes"}), "body")
        return cls(version=req_int(body, "version", lo=1), changes=_read_changes(body, faults))


@dataclass(frozen=True)
class Snapshot:
    """Everything a terminal caches, as of delta ``version`` (0 = nothing yet); ``changes``
    as in :class:`Delta`."""

    version: int
    changes: tuple[Change | dict[str, Any], ...]

    def to_body(self) -> dict[str, Any]:
        return {"version": self.version, "changes": [_wire_change(c) for c in self.changes]}

    @classmethod
    def from_body(cls, body: dict[str, Any], faults: list[ProtocolError] | None = None) -> Snapshot:
        """``faults``: skip undecodable changes, see :func:`salvage_changes`."""
        only_keys(body, frozenset({"version", "changes"}), "body")
        return cls(version=req_int(body, "version"), changes=_read_changes(body, faults))
