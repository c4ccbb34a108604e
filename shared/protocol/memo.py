"""A small bounded memo of pure verdicts on immutable bytes, shared by the threads of a process.

Used where every terminal (all of them, in one process, in the simulator) opens the same
server broadcast: the verdict on given bytes under a given key is a pure function of the
two, so the second opening may take the first one's result. Only successes are kept (a
failure is checked in full every time, so forged traffic evicts nothing); the first-in
entry goes first when full.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class FifoMemo(Generic[V]):
    """At most ``max_entries`` results, the oldest evicted first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[Hashable, V] = {}
        self._lock = threading.Lock()  # the server seals from several threads

    def get(self, key: Hashable) -> V | None:
        return self._entries.get(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            if key not in self._entries and len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
