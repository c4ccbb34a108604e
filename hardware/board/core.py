"""The board's logic: frames in, peripherals driven, keys and acknowledgements out.

:class:`Board` is plain logic over five small parts it is handed (micropython-lib style:
drivers receive their bus): a :class:`Link` (the USB serial line), a :class:`Screen`, a
:class:`Keys` source, a :class:`Sound` and a :class:`Light`. ``main.py`` hands it the real
RP2040 drivers; the terminal's simulated board hands it in-memory ones and a
pseudo-terminal, and runs exactly this code.

Every command from the terminal carries a sequence byte and is acknowledged (``ACK seq
status``) once carried out; a repeated sequence number (the terminal resending after a lost
ACK) is acknowledged again but not carried out twice.
"""

from . import frame

VERSION = "canteen-board/1"
QUIET_MS = 30  # a partial frame older than this was truncated


class Link:
    def read(self) -> bytes:
        """Whatever bytes have arrived (b"" if none); never blocks."""
        return b""

    def write(self, data: bytes) -> None:
        pass


class Screen:
    def show(self, lines: list, tone: int) -> None:
        pass


class Keys:
    def scan(self, now_ms: int) -> str:
        """A newly pressed key ("0".."9", "*", "#"), or "" if none."""
        return ""


class Sound:
    def play(self, tone: int, now_ms: int) -> None:
        pass

    def update(self, now_ms: int) -> None:
        pass


class Light:
    def set(self, colour: int) -> None:
        pass


TONE_LIGHT = {frame.TONE_OK: frame.LED_GREEN, frame.TONE_ERROR: frame.LED_RED}


class Board:
    def __init__(self, link: Link, screen: Screen, keys: Keys, sound: Sound, light: Light) -> None:
        self.link = link
        self.screen = screen
        self.keys = keys
        self.sound = sound
        self.light = light
        self.decoder = frame.Decoder()
        self.last_seq = -1
        self.last_rx_ms = 0
        self.handled = 0

    def hello(self) -> None:
        self.link.write(frame.encode(frame.HELLO, VERSION.encode()))

    def step(self, now_ms: int) -> None:
        """One pass of the main loop: serial in, keypad, buzzer."""
        data = self.link.read()
        if data:
            self.last_rx_ms = now_ms
            frames = self.decoder.feed(data)
        elif self.decoder.pending() and now_ms - self.last_rx_ms > QUIET_MS:
            frames = self.decoder.idle()
        else:
            frames = []
        for ftype, payload in frames:
            self.handle(ftype, payload, now_ms)
        key = self.keys.scan(now_ms)
        if key:
            self.link.write(frame.encode(frame.KEY, key.encode()))
        self.sound.update(now_ms)

    def handle(self, ftype: int, payload: bytes, now_ms: int) -> None:
        if not payload:
            return
        seq = payload[0]
        if seq == self.last_seq:
            self.link.write(frame.encode(frame.ACK, bytes((seq, frame.STATUS_OK))))
            return
        ok = self.carry_out(ftype, payload[1:], now_ms)
        if ok:
            self.last_seq = seq
            self.handled += 1
        self.link.write(frame.encode(frame.ACK, bytes((seq, frame.STATUS_OK if ok else frame.STATUS_BAD))))

    def carry_out(self, ftype: int, body: bytes, now_ms: int) -> bool:
        if ftype == frame.SHOW and len(body) >= 1:
            try:
                text = body[1:].decode("utf-8")
            except UnicodeError:
                return False
            tone = body[0]
            self.screen.show(text.split("\n"), tone)
            self.light.set(TONE_LIGHT.get(tone, frame.LED_OFF))
            if tone != frame.TONE_INFO:
                self.sound.play(tone, now_ms)
            return True
        if ftype == frame.BEEP and len(body) == 1:
            self.sound.play(body[0], now_ms)
            return True
        if ftype == frame.LED and len(body) == 1:
            self.light.set(body[0])
            return True
        if ftype == frame.PING:
            self.hello()  # tells the terminal which firmware answers
            return True
        return False
