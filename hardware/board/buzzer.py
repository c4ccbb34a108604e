"""A passive buzzer on a PWM pin: a short high beep for OK, two low ones for an error.

Patterns are lists of (frequency Hz, duration ms) steps, 0 Hz being silence, played
without blocking the main loop (:meth:`update` is called on every pass).
"""

from machine import PWM

from .core import Sound

PATTERNS = {
    0: [(2000, 40)],
    1: [(2700, 120)],
    2: [(900, 180), (0, 80), (900, 180)],
}


class Buzzer(Sound):
    def __init__(self, pwm: PWM) -> None:
        self.pwm = pwm
        self.steps = []
        self.step_end_ms = 0
        self.pwm.duty_u16(0)

    def play(self, tone: int, now_ms: int) -> None:
        self.steps = list(PATTERNS.get(tone, PATTERNS[0]))
        self.step_end_ms = now_ms
        self.update(now_ms)

    def update(self, now_ms: int) -> None:
        if not self.steps or now_ms < self.step_end_ms:
            if not self.steps and now_ms >= self.step_end_ms:
                self.pwm.duty_u16(0)
            return
        freq, ms = self.steps.pop(0)
        if freq:
            self.pwm.freq(freq)
            self.pwm.duty_u16(32768)
        else:
            self.pwm.duty_u16(0)
        self.step_end_ms = now_ms + ms
