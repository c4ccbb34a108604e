"""QR code scanners: the interface, a serial scanner (pyserial) and a simulated one.

A scanner yields :class:`Scan` events — the text of one code. Hand-held and fixed-mount
scanners in "serial" (USB CDC or UART) mode send each code followed by a line ending; the
port, speed and line ending come from configuration (``serial:/dev/ttyACM0,9600,cr``, see
:mod:`hardware.serial_port`). The serial driver reads on its own thread; a port that fails
or disappears is reported (``on_error``, :attr:`SerialQrScanner.last_error`) and reopened,
never raised into the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hardware.device_thread import EventQueue, ReopeningDevice
from hardware.serial_port import Port, SerialError, SerialSpec, open_port

MAX_CODE_BYTES = 1024  # a longer "line" is noise (a wrong baud rate), not a code


@dataclass(frozen=True)
class Scan:
    text: str


class QrScanner(Protocol):
    def read(self, timeout_s: float) -> Scan | None:
        """Block up to ``timeout_s`` for the next code; None if none came."""
        ...

    def close(self) -> None: ...


class SimulatedQrScanner(EventQueue[Scan]):
    """Codes arrive from code (the simulator, a test) instead of a camera."""

    def present(self, text: str) -> None:
        self.put(Scan(text))


def split_lines(buffer: bytes, eol: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines in ``buffer`` (without their ending) and the incomplete rest."""
    *lines, rest = buffer.split(eol)
    return lines, rest


class SerialQrScanner(ReopeningDevice[Scan]):
    """``ready`` is set while the port is open (bytes sent before that are lost)."""

    open_errors = read_errors = (SerialError, OSError)

    def __init__(
        self,
        spec: SerialSpec,
        *,
        opener: Callable[[SerialSpec], Port] = open_port,
        on_error: Callable[[str], None] | None = None,
        reopen_s: float = 2.0,
    ) -> None:
        super().__init__(f"QR scanner {spec.port}", on_error=on_error, reopen_s=reopen_s)
        self.spec = spec
        self._opener = opener
        self.start()

    def open_device(self) -> Port:
        return self._opener(self.spec)

    def read_device(self, port: Port) -> None:
        eol = self.spec.eol_bytes
        buffer = b""
        while not self.stopping():
            chunk = port.read(256)
            if not chunk:
                continue
            lines, buffer = split_lines(buffer + chunk, eol)
            if len(buffer) > MAX_CODE_BYTES:
                self.report(f"discarded {len(buffer)} bytes without a line ending (wrong baud or eol?)")
                buffer = b""
            for raw in lines:
                text = raw.strip(b"\r\n \t").decode("utf-8", errors="replace")
                if not text:
                    continue
                if not text.isprintable() or len(raw) > MAX_CODE_BYTES:
                    self.report("discarded an unreadable code")
                    continue
                self.put(Scan(text))
