"""Serial ports: the one module that imports pyserial.

Every serial device (the QR scanner, the peripheral board) names its port in the terminal's
configuration as ``serial:<port>,<baud>,<eol>`` — for example
``serial:/dev/ttyACM0,9600,cr`` — and opens it here. ``eol`` is the line ending the device
sends after each message: ``cr``, ``lf`` or ``crlf``. Tests open one end of a pseudo-terminal
pair (``os.openpty``) the same way, so the real pyserial code path runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import serial

EOLS = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}

SerialError = serial.SerialException  # raised when a port cannot be opened or goes away


class Port(Protocol):
    """What drivers use of an open port (a ``serial.Serial`` fits)."""

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SerialSpec:
    port: str
    baud: int = 9600
    eol: str = "cr"

    @property
    def eol_bytes(self) -> bytes:
        return EOLS[self.eol]

    @classmethod
    def parse(cls, spec: str) -> SerialSpec:
        """``serial:<port>[,<baud>[,<eol>]]`` (the ``serial:`` prefix is optional)."""
        body = spec.removeprefix("serial:")
        parts = [p.strip() for p in body.split(",")]
        if not parts[0]:
            raise ValueError(f"serial spec {spec!r}: no port")
        baud = 9600
        if len(parts) > 1 and parts[1]:
            if not parts[1].isdigit() or int(parts[1]) <= 0:
                raise ValueError(f"serial spec {spec!r}: baud must be a positive integer")
            baud = int(parts[1])
        eol = parts[2].lower() if len(parts) > 2 and parts[2] else "cr"
        if eol not in EOLS:
            raise ValueError(f"serial spec {spec!r}: line ending must be one of {sorted(EOLS)}")
        if len(parts) > 3:
            raise ValueError(f"serial spec {spec!r}: too many fields")
        return cls(parts[0], baud, eol)


def open_port(spec: SerialSpec, timeout_s: float = 0.2) -> Port:
    """Open the port (8N1, no flow control); reads return after ``timeout_s`` if idle."""
    return serial.Serial(spec.port, spec.baud, timeout=timeout_s, write_timeout=1.0)
