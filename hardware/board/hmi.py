"""The customer display: a serial HMI screen (TJC/Nextion-style) on a hardware UART.

The screen holds a page with text boxes ``t0``..``t3`` and shows UTF-8 Chinese with its own
font, so the board only sends ``t0.txt="支付成功"`` followed by ``FF FF FF``.
"""

from machine import UART

from .core import Screen

LINES = 4
END = b"\xff\xff\xff"
COLOURS = {0: 0, 1: 2016, 2: 63488}  # RGB565: black (info), green (ok), red (error)


class Hmi(Screen):
    def __init__(self, uart: UART) -> None:
        self.uart = uart

    def command(self, text: str) -> None:
        self.uart.write(text.encode("utf-8") + END)

    def show(self, lines: list, tone: int) -> None:
        for i in range(LINES):
            text = lines[i] if i < len(lines) else ""
            quoted = text.replace('"', "'")
            self.command(f't{i}.txt="{quoted}"')
            self.command(f"t{i}.pco={COLOURS.get(tone, 0)}")
