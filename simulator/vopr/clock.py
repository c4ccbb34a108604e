"""Simulated time: the world's true time, and each node's clock reading it.

:class:`SimTime` is the true time of the simulated world in epoch milliseconds; only the
simulator moves it. The network and the crash model use it directly. Every node reads it
through its own :class:`NodeClock` (a :class:`shared.clock.Clock`): the server's is true
(it is the time authority); a terminal's may be skewed, and may jump forwards or back (a
Pi without a real-time clock, an NTP step). The sync agent's monotonic clock is the true
time in seconds — a monotonic clock does not jump.
"""

from __future__ import annotations


class SimTime:
    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def advance(self, delta_ms: int) -> None:
        if delta_ms < 0:
            raise ValueError("true time never goes back")
        self.now_ms += delta_ms

    def monotonic_s(self) -> float:
        return self.now_ms / 1000.0


class NodeClock:
    """A node's wall clock: true time plus this node's offset."""

    def __init__(self, time: SimTime, offset_ms: int = 0) -> None:
        self._time = time
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return self._time.now_ms + self.offset_ms

    def jump(self, delta_ms: int) -> None:
        self.offset_ms += delta_ms
