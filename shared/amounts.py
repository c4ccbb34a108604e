"""The amount domain: which fen amounts and balances the system carries, defined once.

Every amount and balance travels to terminals as a JSON integer, and the protocol's decoders
(:mod:`shared.protocol.messages`) refuse one outside ``[FEN_MIN, FEN_MAX]`` — ±2^53, the
integers every JSON reader represents exactly. So the server refuses, before it writes
anything, an amount a person or file gives outside that range (:func:`check_fen`) and a
ledger move that would carry a balance out of it (:func:`check_balance`): nothing it records
can then be unreadable for a terminal. Operation ceilings (a top-up, an allocation) are
far lower and are settings of the server (:mod:`server.registry.ceilings`).
"""

from __future__ import annotations

from shared.errors import DomainError

FEN_MAX = 2**53  # the largest amount or balance the wire carries (exact in every JSON reader)
FEN_MIN = -(2**53)  # balances may be negative (a recorded offline overdraft)
FEN_DIGITS = len(str(FEN_MAX))  # a typed number with more digits is out of range unread


def check_fen(value: object, what: str = "amount", *, lo: int = FEN_MIN, hi: int = FEN_MAX) -> int:
    """``value`` as an ``int`` of fen within ``[lo, hi]`` (by default the carriable range).

    Not an int (a bool, a float, a string) → ``bad_amount``; outside ``[lo, hi]`` where
    that lies within the carriable range → ``invalid_input``; outside the carriable range →
    ``amount_out_of_range``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise DomainError("bad_amount", f"{what} must be a whole number of fen, got {value!r:.40}")
    if not FEN_MIN <= value <= FEN_MAX:
        raise DomainError("amount_out_of_range", f"{what}: {_short(value)} fen is outside ±2^53")
    if not lo <= value <= hi:
        raise DomainError("invalid_input", f"{what}: {value} fen is outside [{lo}, {hi}]")
    return value


def check_amount(value: object, what: str = "amount") -> int:
    """A positive amount of money to move: ``int`` fen in ``[1, FEN_MAX]``."""
    return check_fen(value, what, lo=1)


def check_balance(account: str, old: int, new: int) -> None:
    """Refuse a change that leaves a balance outside the carriable range. A balance already
    outside it (recorded before this rule) may only move back towards it."""
    if FEN_MIN <= new <= FEN_MAX:
        return
    if (new > FEN_MAX and new > old) or (new < FEN_MIN and new < old):
        raise DomainError(
            "amount_out_of_range", f"balance of {account} would become {_short(new)} fen (outside ±2^53)"
        )


def _short(value: int) -> str:
    """A huge int for a message (``str`` of one of more than 4,300 digits would raise)."""
    return str(value) if abs(value) < 10**40 else ("-" if value < 0 else "") + "1e40+"
