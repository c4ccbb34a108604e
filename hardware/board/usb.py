"""The USB serial line (the RP2040's USB CDC port, i.e. MicroPython's stdin/stdout).

Ctrl-C (0x03) must not interrupt the firmware when it appears inside a binary frame, so
keyboard interrupt is switched off; bytes are read without blocking via ``select.poll``.
"""

import select
import sys

import micropython

from .core import Link


class UsbLink(Link):
    def __init__(self) -> None:
        micropython.kbd_intr(-1)
        self.rx = sys.stdin.buffer
        self.tx = sys.stdout.buffer
        self.poll = select.poll()
        self.poll.register(self.rx, select.POLLIN)

    def read(self) -> bytes:
        data = b""
        while self.poll.poll(0) and len(data) < 256:
            data += self.rx.read(1)
        return data

    def write(self, data: bytes) -> None:
        self.tx.write(data)
