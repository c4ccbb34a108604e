"""Serial ports: the one module that imports pyserial.

:func:`open_serial` opens a device (``/dev/ttyACM0``, a pseudo-terminal of the simulated
board …) in raw 8N1 mode with a read timeout; callers use only ``read``/``write``/``close``
(:class:`SerialPort`), so tests can hand them any object with those three methods.
"""

from __future__ import annotations

from typing import Protocol

import serial


class SerialPort(Protocol):
    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def close(self) -> None: ...


def open_serial(port: str, baud: int = 115200, timeout: float = 0.05) -> SerialPort:
    """Open ``port``; ``read`` returns what arrived within ``timeout`` seconds (maybe b"")."""
    return serial.Serial(port, baud, timeout=timeout, write_timeout=2.0)
