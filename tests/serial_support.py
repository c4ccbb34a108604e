"""A pseudo-terminal standing in for a serial device (a scanner, the board's port)."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def raw_pty() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal pair: the master's descriptor (write there what the device sends)
    and the slave's path for the driver to open. The slave is raw already, as the driver
    will set it: bytes written before it opens stay raw. Both closed after."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        for fd in (master, slave):
            try:
                os.close(fd)
            except OSError:
                pass
