"""Downloads of a table: CSV (UTF-8 with a BOM, formula-safe) and Excel ``.xlsx``.

Both go through the project's one safe writer of each kind (:mod:`server.infra.csv_safe`,
:mod:`server.infra.xlsx_safe`): text that would start a formula stays text. Amounts: CSV shows
``¥12.50`` (marked a number, so a negative amount keeps its sign), Excel a yuan number shown
``¥12.50``; times in Beijing time. A page offers its table's downloads with
``?format=csv`` / ``?format=xlsx`` on the same address and the same search and order::

    if request.args.get("format"):
        return table_download(PEOPLE, fetch_all(conn, PEOPLE, query, where, args), "人员名单")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from flask import Response, request

from server.infra.csv_safe import Number, write_csv
from server.infra.db_flask import get_clock
from server.infra.xlsx_safe import write_xlsx
from server.web.fmt import china_time, yuan
from server.web.tables import Table
from shared.errors import DomainError

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _cell(kind: str, value: Any, for_xlsx: bool) -> object:  # noqa: ANN401  # a row's value
    if value is None:
        return None
    if kind == "fen":
        return int(value) if for_xlsx else Number(yuan(int(value)))
    if kind == "time":
        return china_time(int(value), "%Y-%m-%d %H:%M:%S")
    if kind == "int":
        return int(value)
    return str(value)


def attachment(data: bytes, filename: str, mimetype: str) -> Response:
    """A file download; a Chinese file name survives (RFC 6266 ``filename*``)."""
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return Response(
        data, mimetype=mimetype, headers={"Content-Disposition": disposition, "Cache-Control": "no-store"}
    )


def rows_file(
    fmt: str, headers: Sequence[str], kinds: Sequence[str], rows: Sequence[Sequence[Any]], stem: str
) -> Response:
    """Rows (already in column order) as a CSV or xlsx download named ``stem`` + date."""
    if fmt not in FORMATS:
        raise DomainError(
            "invalid_input", f"format must be csv or xlsx, not {fmt!r}", zh="下载格式须为 CSV 或 Excel"
        )
    day = china_time(get_clock().now_ms(), "%Y%m%d")
    name = f"{stem}-{day}.{fmt}"
    if fmt == "csv":
        text = write_csv(headers, ([_cell(k, v, False) for k, v in zip(kinds, r, strict=True)] for r in rows))
        return attachment(text.encode("utf-8"), name, FORMATS["csv"])
    money = {i for i, k in enumerate(kinds) if k == "fen"}
    data = write_xlsx(
        headers,
        ([_cell(k, v, True) for k, v in zip(kinds, r, strict=True)] for r in rows),
        title=stem,
        money_columns=money,
    )
    return attachment(data, name, FORMATS["xlsx"])


def table_download(table: Table, rows: Sequence[dict[str, Any]], stem: str) -> Response:
    """A table's rows (from :func:`server.web.tables.fetch_all`) in the format the request asks."""
    cols = table.columns
    return rows_file(
        request.args.get("format", ""),
        [c.label for c in cols],
        [c.kind for c in cols],
        [[r.get(c.key) for c in cols] for r in rows],
        stem,
    )
