"""QR code scanners: the interface, a serial scanner (pyserial) and a simulated one.

A scanner yields :class:`Scan` events — the text of one code. Hand-held and fixed-mount
scanners in "serial" (USB CDC or UART) mode send each code followed by a line ending; the
port, speed and line ending come from configuration (``serial:/dev/ttyACM0,9600,cr``, see
:mod:`hardware.serial_port`). The serial driver reads on its own thread; a port that fails
or disappears is reported (``on_error``, :attr:`SerialQrScanner.last_error`) and reopened,
never raised into the terminal.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hardware.serial_port import Port, SerialError, SerialSpec, open_port

log = logging.getLogger(__name__)

MAX_CODE_BYTES = 1024  # a longer "line" is noise (a wrong baud rate), not a code


@dataclass(frozen=True)
class Scan:
    text: str


class QrScanner(Protocol):
    def read(self, timeout_s: float) -> Scan | None:
        """Block up to ``timeout_s`` for the next code; None if none came."""
        ...

    def close(self) -> None: ...


class SimulatedQrScanner:
    """Codes arrive from code (the simulator, a test) instead of a camera."""

    def __init__(self) -> None:
        self._scans: queue.Queue[Scan] = queue.Queue()

    def present(self, text: str) -> None:
        self._scans.put(Scan(text))

    def read(self, timeout_s: float) -> Scan | None:
        try:
            return self._scans.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        return None


def split_lines(buffer: bytes, eol: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines in ``buffer`` (without their ending) and the incomplete rest."""
    *lines, rest = buffer.split(eol)
    return lines, rest


class SerialQrScanner:
    def __init__(
        self,
        spec: SerialSpec,
        *,
        opener: Callable[[SerialSpec], Port] = open_port,
        on_error: Callable[[str], None] | None = None,
        reopen_s: float = 2.0,
    ) -> None:
        self.spec = spec
        self._opener = opener
        self._on_error = on_error or (lambda _msg: None)
        self._reopen_s = reopen_s
        self._scans: queue.Queue[Scan] = queue.Queue()
        self._stop = threading.Event()
        self.last_error: str | None = None
        self.errors = 0
        self.ready = threading.Event()  # set while the port is open (bytes sent before are lost)
        self._thread = threading.Thread(target=self._run, name=f"qr-scanner-{spec.port}", daemon=True)
        self._thread.start()

    def read(self, timeout_s: float) -> Scan | None:
        try:
            return self._scans.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _report(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.error("QR scanner %s: %s", self.spec.port, message)
        self._on_error(message)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                port = self._opener(self.spec)
            except (SerialError, OSError) as exc:
                self._report(f"cannot open: {exc}")
                self._stop.wait(self._reopen_s)
                continue
            self.last_error = None
            self.ready.set()
            try:
                self._read_lines(port)
            except (SerialError, OSError) as exc:
                self.ready.clear()
                self._report(f"port failed: {exc}")
                self._stop.wait(self._reopen_s)
            finally:
                self.ready.clear()
                port.close()

    def _read_lines(self, port: Port) -> None:
        eol = self.spec.eol_bytes
        buffer = b""
        while not self._stop.is_set():
            chunk = port.read(256)
            if not chunk:
                continue
            lines, buffer = split_lines(buffer + chunk, eol)
            if len(buffer) > MAX_CODE_BYTES:
                self._report(f"discarded {len(buffer)} bytes without a line ending (wrong baud or eol?)")
                buffer = b""
            for raw in lines:
                text = raw.strip(b"\r\n \t").decode("utf-8", errors="replace")
                if not text:
                    continue
                if not text.isprintable() or len(raw) > MAX_CODE_BYTES:
                    self._report("discarded an unreadable code")
                    continue
                self._scans.put(Scan(text))
