"""Accounting periods: quarters, years and the allocation deadline, in Asia/Shanghai time.

A quarter is written ``2026Q1``. It runs from 00:00 on its first day to 00:00 on the first
day of the next quarter (exclusive), Beijing time; a sale belongs to the quarter of its
``occurred_at_ms`` (when the diner paid, not when the server heard of it). A year runs to
00:00 on 1 January of the next year: that instant is the year-end clearing cutoff.

Allocation deadline (第九条 "每季度第一个月10日前"): a unit's allocation for a quarter is on
time when it is posted before 00:00 on the 11th of the quarter's first month — i.e. at
any time on the 10th or earlier, early allocations included. Pure functions only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from shared.clock import CHINA_TZ, china_datetime, china_day
from shared.errors import DomainError

_QUARTER_RE = re.compile(r"^(?P<year>\d{4})Q(?P<q>[1-4])$")
ALLOCATION_DUE_DAY = 10
CHINA_OFFSET_MS = 8 * 3_600_000  # Asia/Shanghai is UTC+8 all year (no daylight saving)
DAY_MS = 86_400_000


@dataclass(frozen=True, order=True)
class Quarter:
    year: int
    q: int

    @classmethod
    def parse(cls, text: str) -> Quarter:
        m = _QUARTER_RE.match(text.strip().upper()) if isinstance(text, str) else None
        if not m:
            raise DomainError(
                "invalid_input",
                f"quarter must look like 2026Q1, got {text!r}",
                zh=f"季度应写成 2026Q1 这样，而不是“{text}”",
            )
        year = int(m.group("year"))
        if not 2000 <= year <= 2200:  # as parse_year: 0000Q1 has no start date at all
            raise DomainError("invalid_input", f"quarter out of range: {text!r}", zh=f"季度超出范围：{text}")
        return cls(year, int(m.group("q")))

    @classmethod
    def of_ms(cls, at_ms: int) -> Quarter:
        dt = china_datetime(at_ms)
        return cls(dt.year, (dt.month - 1) // 3 + 1)

    def __str__(self) -> str:
        return f"{self.year}Q{self.q}"

    @property
    def first_month(self) -> int:
        return 3 * (self.q - 1) + 1

    @property
    def start_ms(self) -> int:
        return _ms(self.year, self.first_month, 1)

    @property
    def end_ms(self) -> int:
        """Exclusive end: the start of the next quarter."""
        return self.next().start_ms

    def next(self) -> Quarter:
        return Quarter(self.year + 1, 1) if self.q == 4 else Quarter(self.year, self.q + 1)

    def prev(self) -> Quarter:
        return Quarter(self.year - 1, 4) if self.q == 1 else Quarter(self.year, self.q - 1)

    def contains(self, at_ms: int) -> bool:
        return self.start_ms <= at_ms < self.end_ms

    @property
    def allocation_due_ms(self) -> int:
        """First instant at which the quarter's allocation is late (00:00 on the 11th)."""
        return _ms(self.year, self.first_month, ALLOCATION_DUE_DAY + 1)


def _ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=CHINA_TZ).timestamp() * 1000)


def year_start_ms(year: int) -> int:
    return _ms(year, 1, 1)


def year_cutoff_ms(year: int) -> int:
    """The year-end clearing cutoff of ``year``: 00:00 on 1 January of the next year."""
    return _ms(year + 1, 1, 1)


def year_of_ms(at_ms: int) -> int:
    return china_day(at_ms).year


def china_day_of_ms(at_ms: int) -> tuple[int, str]:
    """The Beijing day holding an instant: its midnight (ms) and its date, ``YYYY-MM-DD``
    (:func:`shared.clock.china_day`: once per UTC hour, as the ingest asks for every sale)."""
    day = china_day(at_ms)
    return day.start_ms, day.iso_date


def day_of_ms(at_ms: int) -> str:
    """The Beijing calendar date of an instant, ``YYYY-MM-DD``."""
    return china_day(at_ms).iso_date


def day_number_sql(ms_expr: str) -> str:
    """SQL for the Beijing day number of an epoch-ms column (days since 1970-01-01 CST)."""
    return f"(({ms_expr} + {CHINA_OFFSET_MS}) / {DAY_MS})"


def year_number_sql(ms_expr: str) -> str:
    """SQL for the Beijing calendar year of an epoch-ms column (as :func:`year_of_ms`)."""
    return f"CAST(strftime('%Y', ({ms_expr} + {CHINA_OFFSET_MS}) / 1000, 'unixepoch') AS INTEGER)"


def day_of_number(day_number: int) -> str:
    """``YYYY-MM-DD`` of a Beijing day number from :func:`day_number_sql`."""
    return day_of_ms(day_number * DAY_MS - CHINA_OFFSET_MS)


def day_bounds_ms(day: str) -> tuple[int, int]:
    """[start, end) of a Beijing calendar day given as ``YYYY-MM-DD``."""
    try:
        d = date.fromisoformat(day)
    except (TypeError, ValueError) as exc:
        raise DomainError("invalid_input", f"date must look like 2026-01-06, got {day!r}") from exc
    start = _ms(d.year, d.month, d.day)
    return start, start + DAY_MS


def parse_year(value: object) -> int:
    try:
        year = int(str(value))
    except ValueError as exc:
        raise DomainError("invalid_input", f"year must be a number, got {value!r}") from exc
    if not 2000 <= year <= 2200:
        raise DomainError("invalid_input", f"year out of range: {year}")
    return year
