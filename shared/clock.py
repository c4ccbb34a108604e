"""Clocks handed to the terminal and the server.

Business time (when a sale happened, which meal period, which quarter) always comes from a
clock object passed in, never from ``time.time()`` deep inside, so the simulator can run a
day in seconds and tests can stand still. Times are integer milliseconds since the epoch
(UTC); :data:`CHINA_TZ` is used only where a date or a time of day is needed.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

CHINA_TZ = ZoneInfo("Asia/Shanghai")
DAY_MS = 86_400_000  # a China day: Asia/Shanghai has no daylight saving time


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock time, optionally offset (a terminal whose clock is wrong)."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


class FakeClock:
    """A clock that moves only when told to. Thread-safe."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def set_ms(self, value_ms: int) -> None:
        with self._lock:
            self._now = value_ms

    def advance_ms(self, delta_ms: int) -> None:
        with self._lock:
            self._now += delta_ms


class ScaledClock:
    """Business time that starts at ``start_ms`` and runs ``speed`` times faster than real time."""

    def __init__(self, start_ms: int, speed: float = 1.0) -> None:
        self._start = start_ms
        self._t0 = time.monotonic()
        self.speed = speed

    def now_ms(self) -> int:
        return self._start + int((time.monotonic() - self._t0) * 1000 * self.speed)


def china_datetime(ms: int) -> datetime:
    """Epoch milliseconds as an aware datetime in Asia/Shanghai."""
    return datetime.fromtimestamp(ms / 1000, tz=CHINA_TZ)


def ms_from_china(text: str) -> int:
    """'2026-01-06T12:05' (Asia/Shanghai wall time) -> epoch milliseconds."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CHINA_TZ)
    return int(dt.timestamp() * 1000)


def start_of_china_day_ms(ms: int) -> int:
    """Midnight (Asia/Shanghai) of the day that contains ``ms``."""
    return china_day(ms).start_ms


class ChinaDay(NamedTuple):
    """The Asia/Shanghai day that contains an instant, and the offset there."""

    year: int
    start_ms: int  # its midnight, in epoch milliseconds
    iso_date: str  # "2026-01-06"
    utc_offset_ms: int  # of the instant: +8 h (+9 h in the summers of 1986-1991)


def china_day(ms: int) -> ChinaDay:
    """The :class:`ChinaDay` of ``ms``, computed once per UTC hour (:func:`china_day_computed`
    is the definition). Since 1970 Asia/Shanghai's offsets (+8, and +9 in the summers of
    1986-1991) are whole hours and change on a whole hour, so one UTC hour lies in one
    China day at one offset; earlier instants (LMT +8:05:43 before 1901) and non-int
    times are computed as they are. A terminal asks for every sale it decides, the server
    for every sale it books, nearly all in the same hour."""
    if type(ms) is not int or ms < 0:
        return china_day_computed(ms)
    return _china_day_of_hour(ms // _HOUR_MS)


def china_day_computed(ms: int) -> ChinaDay:
    """:func:`china_day` of ``ms``, computed."""
    dt = china_datetime(ms)
    midnight = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    offset = dt.utcoffset()
    assert offset is not None  # an aware datetime
    return ChinaDay(dt.year, int(midnight.timestamp() * 1000), dt.date().isoformat(), offset // _MS)


def china_minute_of_day(ms: int) -> int:
    """``dt.hour * 60 + dt.minute`` of ``china_datetime(ms)`` (Beijing wall clock), without
    building the datetime: the wall clock is UTC plus the offset :func:`china_day` gives
    (memoised per UTC hour since 1970, computed for the instant before)."""
    if type(ms) is not int:
        dt = china_datetime(ms)
        return dt.hour * 60 + dt.minute
    return (ms + china_day(ms).utc_offset_ms) // 60_000 % 1440


_MS = timedelta(milliseconds=1)
_HOUR_MS = 3_600_000


@functools.lru_cache(maxsize=65_536)  # hours: 7 years
def _china_day_of_hour(hour: int) -> ChinaDay:
    return china_day_computed(hour * _HOUR_MS)
