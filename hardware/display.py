"""The customer display: the interface, a console display and an in-memory one.

A display shows a few short lines and sounds a tone: ``ok`` (approved), ``error``
(declined) or ``info``. The peripheral board driver (serial) implements the same
interface; the terminal never knows which one it talks to.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Protocol, TextIO


@dataclass(frozen=True)
class Screen:
    lines: tuple[str, ...]
    tone: str = "info"  # ok | error | info


class Display(Protocol):
    def show(self, screen: Screen) -> None: ...


class MemoryDisplay:
    """Keeps what was shown; tests and the simulator read it back."""

    def __init__(self) -> None:
        self.screens: list[Screen] = []
        self._lock = threading.Lock()

    def show(self, screen: Screen) -> None:
        with self._lock:
            self.screens.append(screen)

    @property
    def last(self) -> Screen | None:
        with self._lock:
            return self.screens[-1] if self.screens else None


class ConsoleDisplay:
    """Prints screens to a text stream (a terminal on a developer's laptop)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

    def show(self, screen: Screen) -> None:
        mark = {"ok": "✔", "error": "✘"}.get(screen.tone, "·")
        print(f"{mark} " + " | ".join(screen.lines), file=self._out, flush=True)
