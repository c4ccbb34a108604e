"""The simulated clock of a city day, moved on while counters serve their queues.

The city's counters (terminals) serve on their own threads; one driver moves the shared
:class:`~shared.clock.FakeClock` forward a minute at a time. :class:`DayClock` decides how
far it may go without changing what the system sees: see its docstring.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

from shared.clock import FakeClock, china_datetime
from simulator.city.day import MEAL_WINDOWS, minute_ms
from simulator.harness.driver import Harness


class DayClock:
    """The simulated clock while the counters serve their queues.

    The clock moves on one minute at a time while diners who arrived up to ``LAG_MIN``
    minutes ago may still be queueing (they pay when served, a minute or two late, as in a
    real rush) and their sales may still be on their way to the server — but no longer:
    a terminal judges its clock by the time on the server's acknowledgements, and an
    acknowledgement that took five simulated minutes (a fraction of a real second) would
    make it think its clock is wrong. Before a meal period ends, before the network is cut
    or healed, and before a jump of more than ``LAG_MIN`` minutes (between meals,
    overnight) every queue is served and every sale acknowledged — a real terminal's clock
    never jumps. QR payments in progress (:class:`Moment`) hold the clock still: a code is
    good for one minute from when the phone made it.
    """

    LAG_MIN = 3  # < the terminals' 5-minute clock tolerance

    def __init__(self, clock: FakeClock, harness: Harness, moment: Moment) -> None:
        self.clock = clock
        self.harness = harness
        self.moment = moment
        self.inflight: list[tuple[int, list[Future[None]]]] = []

    def add(self, at_ms: int, futures: list[Future[None]]) -> None:
        if futures:
            self.inflight.append((at_ms, futures))

    def _wait(self, until_ms: int | None) -> None:
        keep = []
        for at_ms, futures in self.inflight:
            if until_ms is None or at_ms <= until_ms:
                for f in futures:
                    f.result()
            else:
                keep.append((at_ms, futures))
        self.inflight = keep

    def advance(self, to_ms: int, *, wait_all: bool = False) -> None:
        now = self.clock.now_ms()
        if to_ms <= now:
            return
        if wait_all or to_ms - now > self.LAG_MIN * 60_000 or _crosses_meal_end(now, to_ms):
            self._wait(None)
            if to_ms - now > self.LAG_MIN * 60_000:
                self.harness.wait_acknowledged(to_ms, 300)
        else:
            self._wait(to_ms - self.LAG_MIN * 60_000)
            self.harness.wait_acknowledged(to_ms - self.LAG_MIN * 60_000)
        with self.moment.exclusive():
            self.clock.set_ms(to_ms)


class Moment:
    """QR payments in progress hold the clock still (many at once); moving it waits for
    them and keeps new ones out until it has moved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._moving = False

    def __enter__(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._moving)
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._moving = True
            self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._cond:
                self._moving = False
                self._cond.notify_all()


def _crosses_meal_end(from_ms: int, to_ms: int) -> bool:
    day = china_datetime(from_ms).date()
    return any(from_ms < minute_ms(day, end) <= to_ms for _, end in MEAL_WINDOWS.values())
