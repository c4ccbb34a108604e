"""Writing CSV that a spreadsheet opens safely: the one writer every CSV export uses.

A cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula
to Excel and WPS (``=HYPERLINK(...)``, ``+cmd|' /C calc'!A0``). Text that comes from
outside — canteen and payee names, bank details, labels typed by a clerk or sent to the API —
is neutralised the OWASP way: a leading ``'`` makes the spreadsheet show it as text.

Numbers are not touched: our code writes amounts as ``int`` (fen) and as yuan strings from
:func:`shared.money.format_fen` (``-¥1.50`` / ``¥12.50``), which a caller marks with
:class:`Number` when it is a string. So a legitimate negative amount (an adjustment of
``-150`` fen) stays a number in the spreadsheet, while a *text* cell ``-1+1`` from a
payee's details becomes ``'-1+1``. Every other cell is treated as text.

Files are UTF-8 with a byte-order mark (a spreadsheet on a Chinese desktop then opens them
right) and CRLF line ends.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Number(str):
    """A string our own code formatted as a number (``format_fen``): written as is."""

    __slots__ = ()


def safe_cell(value: object) -> object:
    """The cell as it goes into the file: ints and :class:`Number` unchanged, ``None`` empty,
    any other text prefixed with ``'`` when it would start a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | Number):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_csv(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The whole file as text: BOM, header line, then the rows, every cell through :func:`safe_cell`."""
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in headers])
    writer.writerows([safe_cell(c) for c in row] for row in rows)
    return buf.getvalue()
