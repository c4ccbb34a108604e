"""Money helpers: integer fen in, integer fen out.

Money is an ``int`` number of fen (分) everywhere. This module owns the only rounding rule
(round half up to the fen), the only ``¥12.50`` formatter, and the only parser that turns a
yuan amount typed by a person ("12.5", "12.50", 12) into fen.
"""

from __future__ import annotations

import re

from shared.amounts import FEN_DIGITS, check_fen
from shared.errors import DomainError

# "12.50", "５０", "¥50", "￥12.5", "50元", "¥50元": the currency sign and 元 as people type them
_YUAN_RE = re.compile(r"^(?P<sign>-)?\s*[¥￥]?\s*(?P<int>\d+)(?:\.(?P<frac>\d{1,2}))?\s*元?$")


def round_half_up_div(numerator: int, denominator: int) -> int:
    """Return numerator / denominator rounded half up (away from zero at .5) to an int.

    The one rounding rule of the system: fees and withholdings are computed as exact integer
    fractions and rounded here, e.g. 0.5% of 101 fen = 101 * 5 / 1000 = 0.505 -> 1 fen.
    """
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    if not isinstance(numerator, int) or not isinstance(denominator, int):
        raise TypeError("round_half_up_div takes integers")
    sign = -1 if numerator < 0 else 1
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return sign * q


def format_fen(amount_fen: int) -> str:
    """Render fen as yuan for people: 1250 -> '¥12.50', -5 -> '-¥0.05'."""
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool):
        raise TypeError("amount_fen must be an int")
    sign = "-" if amount_fen < 0 else ""
    yuan, fen = divmod(abs(amount_fen), 100)
    return f"{sign}¥{yuan}.{fen:02d}"


def parse_yuan(value: object) -> int:
    """Parse a yuan amount with at most two decimals into fen.

    Accepts ints and decimal strings ("12", "12.5", "12.50", with or without a leading
    ``¥``/``￥`` and a trailing ``元``; full-width digits too). Floats are accepted only when
    their shortest repr has at most two decimals (JSON scenario files carry 3.5); anything
    finer is refused with ``bad_amount`` rather than silently rounded. An amount outside
    the range the system carries (:mod:`shared.amounts`) is refused with ``amount_out_of_range``.
    """
    if isinstance(value, bool):
        raise DomainError("bad_amount", detail=repr(value))
    if isinstance(value, int):
        return check_fen(value * 100)
    if isinstance(value, float):
        value = repr(value)
    if not isinstance(value, str):
        raise DomainError("bad_amount", detail=repr(value))
    m = _YUAN_RE.match(value.strip())
    if not m:
        raise DomainError("bad_amount", detail=value)
    if len(m.group("int").lstrip("0")) > FEN_DIGITS:  # int() refuses more than 4,300 digits
        raise DomainError("amount_out_of_range", f"{value.strip()[:24]}… yuan")
    frac = (m.group("frac") or "").ljust(2, "0")
    fen = int(m.group("int")) * 100 + int(frac or "0")
    return check_fen(-fen if m.group("sign") else fen)
