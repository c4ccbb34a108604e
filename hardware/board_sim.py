"""A simulated peripheral board: the real firmware logic on a pseudo-terminal.

:class:`SimulatedBoard` opens a pty pair, runs :class:`hardware.board.core.Board` — the
same code the RP2040 runs — on the master side in a thread, with in-memory peripherals in
place of the HMI screen, keypad matrix, buzzer and LEDs, and offers the slave side's path
(``/dev/pts/N``) as :attr:`port`. The terminal opens that path with pyserial exactly as it
opens ``/dev/ttyACM0``: everything from the pyserial port up is the real code path. What is
simulated: the screen/keypad/buzzer/LED drivers (``hmi``, ``matrix``, ``buzzer``, ``led``),
the USB CDC line (``usb``) and the flash file system a firmware update is installed on
(``flash``: :class:`MemoryFirmware` keeps the unpacked files in memory, and a "restart"
makes the board say the new version), which only exist on the board. Receiving an update —
the frames, the order of the chunks, the SHA-256 check before anything is installed — is
the firmware's own code (:mod:`hardware.board.core`).
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
import tty

from hardware.board import core, frame, fwimage


class PtyLink(core.Link):
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self) -> bytes:
        if select.select([self.fd], [], [], 0)[0]:
            return os.read(self.fd, 1024)
        return b""

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)


class MemoryLink(core.Link):
    """The board's serial line in memory: bytes put in ``inbox`` are what the Pi sent; what
    the board writes back is decoded into ``sent`` frames."""

    def __init__(self) -> None:
        self.inbox = b""
        self.sent: list[tuple[int, bytes]] = []
        self.decoder = frame.Decoder()

    def read(self) -> bytes:
        data, self.inbox = self.inbox, b""
        return data

    def write(self, data: bytes) -> None:
        self.sent += self.decoder.feed(data)


class MemoryScreen(core.Screen):
    def __init__(self) -> None:
        self.shown: list[tuple[list[str], int]] = []

    def show(self, lines: list, tone: int) -> None:
        self.shown.append((list(lines), tone))


class QueueKeys(core.Keys):
    def __init__(self) -> None:
        self.pressed: queue.Queue[str] = queue.Queue()

    def scan(self, now_ms: int) -> str:
        try:
            return self.pressed.get_nowait()
        except queue.Empty:
            return ""


class RecordingSound(core.Sound):
    def __init__(self) -> None:
        self.played: list[int] = []

    def play(self, tone: int, now_ms: int) -> None:
        self.played.append(tone)


class RecordingLight(core.Light):
    def __init__(self) -> None:
        self.colour = 0

    def set(self, colour: int) -> None:
        self.colour = colour


class MemoryFirmware(core.Firmware):
    """The board's flash, in memory: the staged image, then the installed files."""

    def __init__(self) -> None:
        self.staged = bytearray()
        self.installed: dict[str, bytes] = {}
        self.installed_version = ""
        self.restarts = 0

    def begin(self, size: int) -> bool:
        self.staged = bytearray()
        return 0 < size <= 200_000  # as hardware.board.flash.MAX_IMAGE

    def append(self, data: bytes) -> bool:
        self.staged += data
        return True

    def commit(self, version: str) -> bool:
        files = fwimage.unpack(bytes(self.staged))
        if files is None:
            return False
        self.installed, self.installed_version = dict(files), version
        return True

    def version(self) -> str:
        return self.installed_version

    def restart(self) -> None:
        self.restarts += 1


class SimulatedBoard:
    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.screen = MemoryScreen()
        self.keys = QueueKeys()
        self.sound = RecordingSound()
        self.light = RecordingLight()
        self.firmware = MemoryFirmware()
        self.board = core.Board(
            PtyLink(self._master), self.screen, self.keys, self.sound, self.light, self.firmware
        )
        self.on_show: list = []  # callbacks(lines): a simulated diner reacting to the screen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulated-board", daemon=True)

    def start(self) -> SimulatedBoard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self._master)
        os.close(self._slave)

    def __enter__(self) -> SimulatedBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def press(self, keys: str) -> None:
        for k in keys:
            self.keys.pressed.put(k)

    @property
    def lines(self) -> list[str]:
        return self.screen.shown[-1][0] if self.screen.shown else []

    def _run(self) -> None:
        t0 = time.monotonic()
        seen = 0
        while not self._stop.is_set():
            select.select([self._master], [], [], 0.002)
            self.board.step(int((time.monotonic() - t0) * 1000))
            while seen < len(self.screen.shown):
                lines = self.screen.shown[seen][0]
                seen += 1
                for callback in self.on_show:
                    callback(lines)
