"""Card readers: the interface, and the simulated reader used by tests and the simulator.

A reader yields :class:`Tap` events (a card presented). The real NFC driver (nfcpy) lives
in its own module and is chosen by configuration; :class:`SimulatedCardReader` is fed
programmatically (``present(card_id)``) and behaves the same to its caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hardware.device_thread import EventQueue


@dataclass(frozen=True)
class Tap:
    card_id: str
    method: str = "card"
    credential: str | None = None  # raw, e.g. an NTAG 424 card's SUN URL (terminal/card_check.py checks it)


class CardReader(Protocol):
    def read(self, timeout_s: float) -> Tap | None:
        """Block up to ``timeout_s`` for the next tap; None if none came."""
        ...

    def close(self) -> None: ...


class SimulatedCardReader(EventQueue[Tap]):
    """Taps arrive from code (the simulator, a test) instead of a radio field."""

    def present(self, card_id: str, method: str = "card") -> None:
        self.put(Tap(card_id, method))
