"""Reversals (冲正) on the wire: a record of their own, never an edit of the sale.

* :class:`Reversal` (terminal → server): one reversal, identified like a sale by
  ``terminal_id`` + ``seq`` (its own per-terminal sequence, from 1, apart from the sales')
  and a ``uuid``; it names the sale it reverses by that sale's ``sale_seq`` and
  ``sale_uuid`` — always a sale of the *same* terminal (a sale is reversed where it was
  made) — and carries its own time, the operator card that authorized it, and the amount,
  which must equal the sale's (the server checks it; it trusts no number from a terminal).
  A digital RMB sale's reversal names the gateway refund it made (``refund_no``).
* :class:`ReversalBatch` (message type ``reversal_batch``, topic
  ``canteen/v1/t/<id>/up/reversals``): reversals HMAC-signed by their terminal, sent from
  their own outbox like sales.
* :class:`ReversalAck` (``reversal_ack``, on the terminal's ack topic): a
  :class:`ReversalResult` per reversal — ``applied``, ``duplicate`` (repeating the first
  decision's reason, or its ``pending``), ``pending`` (its sale has not reached the
  server: kept, applied when it arrives; the terminal keeps it in its outbox until a final
  answer) or ``rejected`` with a stable reason code — with what went back to each purse and
  the holder's balance after it. The server also sends one unasked (``in_reply_to``
  ``"pending"``) when a waiting reversal is applied because its sale arrived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shared.protocol.codec import (
    ProtocolError,
    obj,
    only_keys,
    opt_str,
    req_bool,
    req_enum,
    req_int,
    req_list,
    req_str,
)
from shared.protocol.messages import MAX_SALE_FEN, METHODS, Balance, _balance

REVERSAL_STATUSES = frozenset({"applied", "duplicate", "pending", "rejected"})
MAX_REVERSALS_PER_BATCH = 500
PENDING_REPLY = "pending"  # in_reply_to of an ack nobody asked for: a waiting reversal applied


@dataclass(frozen=True)
class Reversal:
    terminal_id: str
    seq: int
    uuid: str
    sale_seq: int
    sale_uuid: str
    canteen_id: str
    operator_card: str
    amount_fen: int
    occurred_at_ms: int
    method: str = "card"  # the sale's payment method
    offline: bool = False
    refund_no: str | None = None  # digital RMB: the gateway refund this reversal made

    @property
    def reversal_id(self) -> str:
        return f"{self.terminal_id}/R{self.seq}"

    @property
    def sale_id(self) -> str:
        return f"{self.terminal_id}/{self.sale_seq}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.refund_no is None:
            del d["refund_no"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Reversal:
        d = obj(d, "reversal")
        only_keys(d, _REVERSAL_KEYS, "reversal")
        r = cls(
            terminal_id=req_str(d, "terminal_id", max_len=64),
            seq=req_int(d, "seq", lo=1),
            uuid=req_str(d, "uuid", max_len=64),
            sale_seq=req_int(d, "sale_seq", lo=1),
            sale_uuid=req_str(d, "sale_uuid", max_len=64),
            canteen_id=req_str(d, "canteen_id", max_len=64),
            operator_card=req_str(d, "operator_card", max_len=64),
            amount_fen=req_int(d, "amount_fen", lo=1, hi=MAX_SALE_FEN),
            occurred_at_ms=req_int(d, "occurred_at_ms"),
            method=req_enum(d, "method", METHODS),
            offline=req_bool(d, "offline"),
            refund_no=opt_str(d, "refund_no", max_len=128),
        )
        r.validate()
        return r

    def validate(self) -> None:
        if self.uuid == self.sale_uuid:
            raise ProtocolError("bad_field", "uuid: a reversal has its own id, not its sale's")
        if (self.method == "ecny") != (self.refund_no is not None):
            raise ProtocolError("bad_field", "refund_no: given exactly for a digital RMB sale's reversal")


_REVERSAL_KEYS = frozenset(Reversal.__dataclass_fields__)


@dataclass(frozen=True)
class ReversalBatch:
    reversals: tuple[Reversal, ...]

    def to_body(self) -> dict[str, Any]:
        return {"reversals": [r.to_dict() for r in self.reversals]}

    @classmethod
    def from_body(cls, body: dict[str, Any], sender: str) -> ReversalBatch:
        only_keys(body, frozenset({"reversals"}), "body")
        raw = req_list(body, "reversals", max_len=MAX_REVERSALS_PER_BATCH)
        if not raw:
            raise ProtocolError("bad_field", "reversals: empty batch")
        reversals = tuple(Reversal.from_dict(r) for r in raw)
        for r in reversals:
            if r.terminal_id != sender:
                raise ProtocolError("terminal_mismatch", f"reversal {r.reversal_id} sent by {sender}")
        return cls(reversals)


@dataclass(frozen=True)
class ReversalResult:
    """The server's decision on one reversal: ``subsidy_fen``/``self_fen`` went back to the
    holder's purses (their sum is the amount for a purse-paid sale, 0 for digital RMB or a
    quarantined sale that had moved nothing), ``balance`` is theirs afterwards."""

    terminal_id: str
    seq: int
    uuid: str
    status: str
    reason: str | None = None
    subsidy_fen: int = 0
    self_fen: int = 0
    holder_id: str | None = None
    balance: Balance | None = None

    @property
    def pending(self) -> bool:
        """Kept by the server until its sale arrives: not final, the terminal resends it."""
        return self.status == "pending" or (self.status == "duplicate" and self.reason == "pending")

    @property
    def rejected(self) -> bool:
        if self.pending:
            return False
        return self.status == "rejected" or (self.status == "duplicate" and bool(self.reason))

    def to_dict(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "seq": self.seq,
            "uuid": self.uuid,
            "status": self.status,
            "reason": self.reason,
            "subsidy_fen": self.subsidy_fen,
            "self_fen": self.self_fen,
            "holder_id": self.holder_id,
            "balance": None if self.balance is None else self.balance.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any, faults: list[ProtocolError] | None = None) -> ReversalResult:
        d = obj(d, "result")
        only_keys(d, frozenset(cls.__dataclass_fields__), "result")
        return cls(
            terminal_id=req_str(d, "terminal_id", max_len=64),
            seq=req_int(d, "seq", lo=1),
            uuid=req_str(d, "uuid", max_len=64),
            status=req_enum(d, "status", REVERSAL_STATUSES),
            reason=opt_str(d, "reason", max_len=64),
            subsidy_fen=req_int(d, "subsidy_fen", hi=MAX_SALE_FEN),
            self_fen=req_int(d, "self_fen", hi=MAX_SALE_FEN),
            holder_id=opt_str(d, "holder_id", max_len=64),
            balance=_balance(d.get("balance"), faults),
        )


@dataclass(frozen=True)
class ReversalAck:
    """The server's answer to one reversal batch, sent after it committed (or unasked, with
    ``in_reply_to`` :data:`PENDING_REPLY`, when waiting reversals were applied)."""

    in_reply_to: str
    results: tuple[ReversalResult, ...] = ()
    reason: str | None = None  # set when the whole message was refused

    def to_body(self) -> dict[str, Any]:
        return {
            "in_reply_to": self.in_reply_to,
            "results": [r.to_dict() for r in self.results],
            "reason": self.reason,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any], faults: list[ProtocolError] | None = None) -> ReversalAck:
        only_keys(body, frozenset({"in_reply_to", "results", "reason"}), "body")
        return cls(
            in_reply_to=req_str(body, "in_reply_to", max_len=64),
            results=tuple(
                ReversalResult.from_dict(r, faults)
                for r in req_list(body, "results", max_len=MAX_REVERSALS_PER_BATCH)
            ),
            reason=opt_str(body, "reason", max_len=64),
        )
