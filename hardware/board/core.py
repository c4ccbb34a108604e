"""The board's logic: frames in, peripherals driven, keys and acknowledgements out.

:class:`Board` is plain logic over five small parts it is handed (micropython-lib style:
drivers receive their bus): a :class:`Link` (the USB serial line), a :class:`Screen`, a
:class:`Keys` source, a :class:`Sound` and a :class:`Light`. ``main.py`` hands it the real
RP2040 drivers; the terminal's simulated board hands it in-memory ones and a
pseudo-terminal, and runs exactly this code.

Every command from the terminal carries a sequence byte and is acknowledged (``ACK seq
status``) once carried out; a repeated sequence number (the terminal resending after a lost
ACK) is acknowledged again but not carried out twice.

**Firmware updates** (pushed by the terminal after it checked the release signature):
``FW_BEGIN`` announces the image's size, SHA-256 and version, ``FW_CHUNK`` frames carry its
bytes in order into the :class:`Firmware` store, and ``FW_COMMIT`` is carried out only if
every byte arrived and the SHA-256 matches — otherwise the board refuses it (``ACK BAD``)
and keeps the firmware it runs. A committed image is installed by the store, and the board
restarts into it and says ``HELLO canteen-board/<version>``.
"""

import hashlib

from . import frame

VERSION_NUMBER = "1"  # of the firmware in this folder; an installed update names its own
VERSION = "canteen-board/" + VERSION_NUMBER
QUIET_MS = 30  # a partial frame older than this was truncated
RESTART_DELAY_MS = 50  # after a commit: time for its ACK to leave before the restart


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


class Firmware:
    """Where an update is staged and installed. This base refuses updates (no store)."""

    def begin(self, size: int) -> bool:
        return False

    def append(self, data: bytes) -> bool:
        return False

    def commit(self, version: str) -> bool:
        """Install the staged image (already checked); True once it is in place."""
        return False

    def version(self) -> str:
        """The installed update's version ("" = the firmware the board was built with)."""
        return ""

    def restart(self) -> None:
        """Start the installed firmware (on the board: a reset, never returns)."""


TONE_LIGHT = {frame.TONE_OK: frame.LED_GREEN, frame.TONE_ERROR: frame.LED_RED}


class Board:
    def __init__(
        self,
        link: Link,
        screen: Screen,
        keys: Keys,
        sound: Sound,
        light: Light,
        firmware: Firmware | None = None,
    ) -> None:
        self.link = link
        self.screen = screen
        self.keys = keys
        self.sound = sound
        self.light = light
        self.firmware = firmware or Firmware()
        self.version = "canteen-board/" + (self.firmware.version() or VERSION_NUMBER)
        self.decoder = frame.Decoder()
        self.last_seq = -1
        self.last_rx_ms = 0
        self.handled = 0
        self.update = None  # the update being received: [size, sha256, version, received, hasher]
        self.restart_at = -1  # when to restart into a committed update (ms), -1: not due

    def hello(self) -> None:
        self.link.write(frame.encode(frame.HELLO, self.version.encode()))

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
        if 0 <= self.restart_at <= now_ms:
            self.restart_at = -1
            self.firmware.restart()  # on the board: a reset; the simulated board goes on here
            self.version = "canteen-board/" + (self.firmware.version() or VERSION_NUMBER)
            self.hello()

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
        if ftype == frame.FW_BEGIN:
            return self.update_begin(body)
        if ftype == frame.FW_CHUNK:
            return self.update_chunk(body)
        if ftype == frame.FW_COMMIT:
            return self.update_commit(now_ms)
        return False

    def update_begin(self, body: bytes) -> bool:
        if len(body) < 37:
            return False
        size = int.from_bytes(body[0:4], "big")
        try:
            version = body[36:].decode()
        except UnicodeError:
            return False
        if not version or not self.firmware.begin(size):
            self.update = None
            return False
        self.update = [size, bytes(body[4:36]), version, 0, hashlib.sha256()]
        return True

    def update_chunk(self, body: bytes) -> bool:
        update = self.update
        if update is None or len(body) < 5 or int.from_bytes(body[0:4], "big") != update[3]:
            return False  # no update begun, or a chunk out of order
        data = body[4:]
        if update[3] + len(data) > update[0] or not self.firmware.append(data):
            self.update = None
            return False
        update[4].update(data)
        update[3] += len(data)
        return True

    def update_commit(self, now_ms: int) -> bool:
        update, self.update = self.update, None
        if update is None or update[3] != update[0] or update[4].digest() != update[1]:
            return False  # incomplete or altered on the way: the running firmware stays
        if not self.firmware.commit(update[2]):
            return False
        self.restart_at = now_ms + RESTART_DELAY_MS
        return True
