"""Where the CPU of a multi-process run went: CPU seconds per part (server workers,
PostgreSQL, the broker, the load generator), read through psutil between two moments.

A ratio like "two ingest processes over one" is bounded by the cores the *other* parts
leave free; this makes that bound a measured number instead of a guess: with ``c`` cores
and ``t`` CPU seconds per sale over all parts, no arrangement of workers exceeds ``c / t``
sales per second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil


def _seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def cpu_seconds(pids: Iterable[int | None], *, with_children: bool = False) -> float:
    """User + system CPU seconds of the live processes ``pids`` (and, ``with_children``,
    of their live descendants: PostgreSQL's backends under the postmaster). A process
    that ended in the meantime counts nothing more."""
    total = 0.0
    for pid in pids:
        if pid is None:
            continue
        try:
            proc = psutil.Process(pid)
            total += _seconds(proc)
            if with_children:
                for child in proc.children(recursive=True):
                    try:
                        total += _seconds(child)
                    except psutil.NoSuchProcess:
                        continue  # ended between listing and reading: its time is gone
        except psutil.NoSuchProcess:
            continue
    return total


class CpuMeter:
    """CPU seconds per named part; ``parts`` maps a name to (pids, with_children)."""

    def __init__(self, parts: dict[str, tuple[list[int | None], bool]]) -> None:
        self.parts = parts
        self._start: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._start = self._read()
        return self

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(pids, with_children=kids) for name, (pids, kids) in self.parts.items()}

    def per_item_ms(self, items: int, reported: dict[str, float] | None = None) -> dict[str, float]:
        """CPU milliseconds per item (a sale) of each part since :meth:`start`, of the parts
        that ``reported`` their own CPU seconds (processes that ended: psutil no longer sees
        them), and ``all``."""
        now = self._read()
        spent = {name: now[name] - self._start[name] for name in now} | (reported or {})
        out = {name: round(1000 * seconds / items, 3) for name, seconds in spent.items()}
        out["all"] = round(sum(out.values()), 3)
        return out


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
