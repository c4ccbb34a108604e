"""Writing Excel ``.xlsx`` files that a spreadsheet opens safely: the one xlsx writer.

The companion of :mod:`server.infra.csv_safe`. openpyxl takes any text that starts with ``=``
for a formula; here every text cell is written as text (its type forced to string), so a
name like ``=HYPERLINK(...)`` shows as typed and never runs. Integers are numbers; columns
named in ``money_columns`` hold integer fen and are written as yuan numbers shown ``¥12.50``
(the cell is exact: fen / 100 as a Decimal, formatted, never rounded by us).
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterable, Sequence
from decimal import Decimal

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

YUAN_FORMAT = '"¥"#,##0.00;-"¥"#,##0.00'


def write_xlsx(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str = "Sheet1",
    money_columns: Collection[int] = (),
) -> bytes:
    """The workbook as bytes: one sheet, a bold header row, then the rows."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=title[:31] or "Sheet1")

    def text(value: object, bold: bool = False) -> WriteOnlyCell:
        cell = WriteOnlyCell(ws, value=str(value))
        cell.data_type = "s"  # never a formula, whatever it starts with
        if bold:
            cell.font = Font(bold=True)
        return cell

    ws.append([text(h, bold=True) for h in headers])
    for row in rows:
        out: list[object] = []
        for i, value in enumerate(row):
            if value is None:
                out.append(None)
            elif i in money_columns and isinstance(value, int) and not isinstance(value, bool):
                cell = WriteOnlyCell(ws, value=Decimal(value) / 100)
                cell.number_format = YUAN_FORMAT
                out.append(cell)
            elif isinstance(value, int) and not isinstance(value, bool):
                out.append(value)
            else:
                out.append(text(value))
        ws.append(out)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
