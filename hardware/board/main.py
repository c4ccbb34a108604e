"""Wiring and main loop on the RP2040 (the device's own ``main.py`` runs ``run()``).

Pins: HMI screen on UART0 (GP0 TX, GP1 RX, 115200 baud); keypad rows GP2–GP5, columns
GP6–GP9; buzzer PWM on GP15; LEDs green GP16, red GP17. Firmware updates are staged and
installed on the board's flash (:mod:`~hardware.board.flash`).
"""

import time

from machine import PWM, UART, Pin

from .buzzer import Buzzer
from .core import Board
from .flash import FlashFirmware
from .hmi import Hmi
from .led import Led
from .matrix import MatrixKeypad
from .usb import UsbLink


def build() -> Board:
    return Board(
        UsbLink(),
        Hmi(UART(0, 115200, tx=Pin(0), rx=Pin(1))),
        MatrixKeypad([Pin(n) for n in (2, 3, 4, 5)], [Pin(n) for n in (6, 7, 8, 9)]),
        Buzzer(PWM(Pin(15))),
        Led(Pin(16, Pin.OUT), Pin(17, Pin.OUT)),
        FlashFirmware(),
    )


def run() -> None:
    board = build()
    board.hello()
    start = time.ticks_ms()
    while True:
        board.step(time.ticks_diff(time.ticks_ms(), start))  # ms since boot (wraps after ~12 days)
        time.sleep_ms(1)
