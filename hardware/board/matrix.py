"""A 4×4 membrane keypad on eight GPIO pins: rows driven, columns read with pull-downs.

A key counts once per press: it must read the same on two scans ``DEBOUNCE_MS`` apart,
and nothing is reported again until every key is released.
"""

from machine import Pin
from micropython import const

from .core import Keys

DEBOUNCE_MS = const(20)
LAYOUT = ("123A", "456B", "789C", "*0#D")


class MatrixKeypad(Keys):
    def __init__(self, rows: list, cols: list) -> None:
        self.rows = rows
        self.cols = cols
        for r in rows:
            r.init(Pin.OUT, value=0)
        for c in cols:
            c.init(Pin.IN, Pin.PULL_DOWN)
        self.candidate = ""
        self.since_ms = 0
        self.reported = ""

    def read(self) -> str:
        for i, row in enumerate(self.rows):
            row.value(1)
            for j, col in enumerate(self.cols):
                if col.value():
                    row.value(0)
                    return LAYOUT[i][j]
            row.value(0)
        return ""

    def scan(self, now_ms: int) -> str:
        key = self.read()
        if key != self.candidate:
            self.candidate = key
            self.since_ms = now_ms
            return ""
        if now_ms - self.since_ms < DEBOUNCE_MS or key == self.reported:
            return ""
        self.reported = key
        return key  # 0–9, * (cancel), # (enter), A–D (function keys: A = 刷脸 face pay)
