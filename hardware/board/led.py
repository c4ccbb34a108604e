"""The status LED: a green and a red LED on two GPIO pins (both off = idle)."""

from machine import Pin

from . import frame
from .core import Light


class Led(Light):
    def __init__(self, green: Pin, red: Pin) -> None:
        self.green = green
        self.red = red
        self.set(frame.LED_OFF)

    def set(self, colour: int) -> None:
        self.green.value(1 if colour == frame.LED_GREEN else 0)
        self.red.value(1 if colour == frame.LED_RED else 0)
