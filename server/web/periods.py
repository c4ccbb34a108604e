"""Which period a page shows: a quarter, a Beijing date or a year from its query string.

Without one, a page shows the current quarter or today (Asia/Shanghai). A malformed one is
refused with the 400 page saying how it should look, rather than silently showing another
period than the one asked for. :func:`recent_quarters` gives the choices of a quarter picker.
"""

from __future__ import annotations

from flask import request

from server.books.periods import Quarter, day_bounds_ms, day_of_ms, parse_year, year_of_ms
from server.infra.db_flask import get_clock
from shared.errors import DomainError

PICKER_QUARTERS = 8


def quarter_arg(raw: str | None = None, default: Quarter | None = None) -> Quarter:
    text = raw if raw is not None else request.args.get("quarter")
    if not text:
        return default or Quarter.of_ms(get_clock().now_ms())
    try:
        return Quarter.parse(text)
    except DomainError as exc:
        raise DomainError(exc.code, exc.detail, zh="季度的写法如 2026Q1") from exc


def day_arg() -> tuple[str, int, int]:
    """(``YYYY-MM-DD``, start, end) of the asked day, default today in Beijing."""
    day = request.args.get("date") or day_of_ms(get_clock().now_ms())
    try:
        start, end = day_bounds_ms(day)
    except DomainError as exc:
        raise DomainError(exc.code, exc.detail, zh="日期的写法如 2026-01-06") from exc
    return day, start, end


def year_arg(raw: str | None, default: int) -> int:
    if not raw:
        return default
    try:
        return parse_year(raw)
    except DomainError as exc:
        raise DomainError(exc.code, exc.detail, zh="年度的写法如 2025") from exc


def recent_quarters(around: Quarter | None = None, count: int = PICKER_QUARTERS) -> list[str]:
    """The next quarter, the current one and the ones before it, newest first; ``around``
    (the one shown) is included even when it is older."""
    q = Quarter.of_ms(get_clock().now_ms()).next()
    out = []
    for _ in range(count):
        out.append(str(q))
        q = q.prev()
    if around is not None and str(around) not in out:
        out.append(str(around))
    return out


def this_year() -> int:
    return year_of_ms(get_clock().now_ms())
