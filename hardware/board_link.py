"""The terminal's driver for the peripheral board (customer display, keypad, buzzer, LED).

:class:`BoardLink` speaks the framed protocol of :mod:`hardware.board.frame` over a serial
port (pyserial, through :mod:`hardware.serial_port`; :func:`open_board`) and implements the terminal's
:class:`~hardware.display.Display` and :class:`~hardware.keypad.Keypad` interfaces, so the
terminal shows "支付成功" and reads card digits without knowing a board is there.

Every command carries a sequence byte; the board acknowledges it once carried out. A
command whose ACK does not come within ``ack_timeout_s`` (a corrupted frame, a lost ACK)
is sent again with the same sequence byte — the board carries out a repeat only once — up
to ``retries`` times. A board that stays silent is logged and reported by :meth:`ping`; a
display failure never stops a sale (it is journaled before anything is shown).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from hardware.board import frame
from hardware.display import Screen
from hardware.keypad import KeyBuffer
from hardware.serial_port import Port, SerialSpec, open_port

log = logging.getLogger(__name__)

TONES = {"info": frame.TONE_INFO, "ok": frame.TONE_OK, "error": frame.TONE_ERROR}
QUIET_S = 0.03


def show_payload(screen: Screen) -> bytes:
    """SHOW body (without the sequence byte): tone, then the lines, cut to fit a frame."""
    text = "\n".join(screen.lines).encode("utf-8")[: frame.MAX_PAYLOAD - 2]
    return bytes((TONES.get(screen.tone, frame.TONE_INFO),)) + text.decode("utf-8", "ignore").encode("utf-8")


def open_board(port: str, *, ack_timeout_s: float = 0.3, retries: int = 3) -> BoardLink:
    """The board on ``port`` (``/dev/ttyACM0`` or ``/dev/ttyACM0,115200``; USB CDC ignores
    the baud rate, 115200 by default)."""
    spec = SerialSpec.parse(port)
    if "," not in port:
        spec = SerialSpec(spec.port, 115200)
    return BoardLink(open_port(spec, timeout_s=0.05), ack_timeout_s=ack_timeout_s, retries=retries)


class BoardLink:
    def __init__(self, port: Port, *, ack_timeout_s: float = 0.3, retries: int = 3) -> None:
        self.port = port
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.version: str | None = None
        self.resends = 0
        self.decoder = frame.Decoder()
        self.keys = KeyBuffer()  # pressed on the board, not yet read
        self._acks: dict[int, int] = {}
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._seq = 0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="board-link", daemon=True)
        self._reader.start()

    # --- Display / Keypad / sound / light --------------------------------------------------

    def show(self, screen: Screen) -> None:
        if not self.command(frame.SHOW, show_payload(screen)):
            log.error("board: display did not acknowledge %r", screen.lines)

    def beep(self, tone: str = "info") -> bool:
        return self.command(frame.BEEP, bytes((TONES.get(tone, frame.TONE_INFO),)))

    def led(self, colour: int) -> bool:
        return self.command(frame.LED, bytes((colour,)))

    def ping(self) -> bool:
        """Is the board there? (Also learns its firmware version.)"""
        return self.command(frame.PING, b"")

    @property
    def firmware_version(self) -> str | None:
        """The version the board's firmware said in its last HELLO (``canteen-board/<v>``)."""
        return self.version.rpartition("/")[2] if self.version else None

    def flash_firmware(self, image: bytes, version: str, timeout_s: float = 10.0) -> bool:
        """Push a firmware image; True once the board restarted and says ``version``."""
        digest = hashlib.sha256(image).digest()
        begin = len(image).to_bytes(4, "big") + digest + version.encode("ascii")
        if not self.command(frame.FW_BEGIN, begin):
            log.error("board: refused to begin a firmware update to %s", version)
            return False
        for offset in range(0, len(image), frame.FW_CHUNK_BYTES):
            chunk = image[offset : offset + frame.FW_CHUNK_BYTES]
            if not self.command(frame.FW_CHUNK, offset.to_bytes(4, "big") + chunk):
                log.error("board: firmware chunk at %d refused", offset)
                return False
        self.version = None
        if not self.command(frame.FW_COMMIT, b""):
            log.error("board: firmware %s refused at commit (SHA-256 or image check)", version)
            self.ping()
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.firmware_version == version:
                return True
            time.sleep(0.05)
            if self.version is None and time.monotonic() > deadline - timeout_s / 2:
                self.ping()
        return self.firmware_version == version

    def read_key(self, timeout_s: float) -> str | None:
        return self.keys.read_key(timeout_s)

    def clear(self) -> None:
        self.keys.clear()

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        self.port.close()

    # --- the protocol ------------------------------------------------------------------------

    def command(self, ftype: int, body: bytes) -> bool:
        """Send one command and wait for its ACK, resending on silence; True if carried out."""
        with self._send_lock:
            self._seq = (self._seq + 1) % 256
            seq = self._seq
            data = frame.encode(ftype, bytes((seq,)) + body)
            for attempt in range(self.retries + 1):
                if attempt:
                    self.resends += 1
                with self._cond:
                    self._acks.pop(seq, None)
                self.port.write(data)
                with self._cond:
                    if self._cond.wait_for(lambda: seq in self._acks, self.ack_timeout_s):
                        return self._acks.pop(seq) == frame.STATUS_OK
            log.warning("board: no ACK for frame type %#x after %d tries", ftype, self.retries + 1)
            return False

    def _read_loop(self) -> None:
        last_rx = time.monotonic()
        while not self._stop.is_set():
            try:
                data = self.port.read(1)  # waits up to the port's timeout for a first byte
                waiting = getattr(self.port, "in_waiting", 0)  # then takes what else is there
                if data and waiting:
                    data += self.port.read(waiting)
            except OSError as exc:  # the cable was pulled: keep trying, the terminal sells on
                log.error("board: serial read failed: %s", exc)
                self._stop.wait(0.5)
                continue
            if data:
                last_rx = time.monotonic()
                frames = self.decoder.feed(data)
            elif self.decoder.pending() and time.monotonic() - last_rx > QUIET_S:
                frames = self.decoder.idle()
            else:
                frames = []
            for ftype, payload in frames:
                self._dispatch(ftype, payload)

    def _dispatch(self, ftype: int, payload: bytes) -> None:
        if ftype == frame.ACK and len(payload) == 2:
            with self._cond:
                self._acks[payload[0]] = payload[1]
                self._cond.notify_all()
        elif ftype == frame.KEY and len(payload) == 1:
            self.keys.put(chr(payload[0]))
        elif ftype == frame.HELLO:
            self.version = payload.decode("ascii", "replace")
