"""The diner's keypad: the interface, a simulated keypad, and reading a few digits.

A keypad yields single keys: ``"0"``–``"9"``, ``"*"`` (cancel), ``"#"`` (enter) and the
function keys ``"A"``–``"D"`` (``A`` starts a face payment). The peripheral board's
driver (:mod:`hardware.board_link`) implements it over USB serial; :class:`SimulatedKeypad`
is fed by code (tests, the simulator).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Protocol

KEYS = frozenset("0123456789*#ABCD")  # A–D: function keys (A = 刷脸, start a face payment)


class Keypad(Protocol):
    def read_key(self, timeout_s: float) -> str | None:
        """The next key pressed within ``timeout_s``, or None."""
        ...

    def clear(self) -> None:
        """Forget keys pressed before now (a new prompt starts clean)."""
        ...


class KeyBuffer:
    """Keys pressed and not yet read, in order: the :class:`Keypad` half of every keypad
    (the simulated one and the board's driver). Thread-safe."""

    def __init__(self) -> None:
        self._keys: queue.Queue[str] = queue.Queue()

    def put(self, key: str) -> None:
        self._keys.put(key)

    def read_key(self, timeout_s: float) -> str | None:
        try:
            return self._keys.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def clear(self) -> None:
        while True:
            try:
                self._keys.get_nowait()
            except queue.Empty:
                return


class SimulatedKeypad(KeyBuffer):
    def press(self, keys: str) -> None:
        for k in keys:
            if k not in KEYS:
                raise ValueError(f"no key {k!r} on the keypad")
            self.put(k)


def read_digits(
    keypad: Keypad,
    n: int,
    timeout_s: float,
    on_progress: Callable[[int], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> str | None:
    """``n`` digits (``#`` not needed; ``*`` cancels), or None on cancel or when the whole
    entry takes longer than ``timeout_s``. ``on_progress(count)`` after each digit."""
    digits = ""
    deadline = monotonic() + timeout_s
    while len(digits) < n:
        left = deadline - monotonic()
        if left <= 0:
            return None
        key = keypad.read_key(left)
        if key is None:
            return None
        if key == "*":
            return None
        if key.isdigit():
            digits += key
            if on_progress is not None:
                on_progress(len(digits))
    return digits
