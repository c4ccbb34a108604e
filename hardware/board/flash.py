"""Firmware updates on the board's own flash (MicroPython's file system).

The image is staged in ``/fw_stage.img`` as it arrives; :class:`~hardware.board.core.Board`
checks its SHA-256 before it calls :meth:`FlashFirmware.commit`, which unpacks it into
``/board_new``, keeps the running firmware as ``/board_prev`` and renames the new one to
``/board``, then the board resets into it. ``/board/VERSION`` names the installed update.
The device's ``main.py`` (:mod:`~hardware.board.device_main`) goes back to ``/board_prev``
if the new firmware does not start.
"""

import os

import machine

from . import fwimage
from .core import Firmware

STAGE = "/fw_stage.img"
MAX_IMAGE = 200_000  # bytes: well inside the RP2040's flash file system


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _remove_tree(path: str) -> None:
    if not _exists(path):
        return
    for name in os.listdir(path):
        full = path + "/" + name
        if os.stat(full)[0] & 0x4000:  # a folder
            _remove_tree(full)
        else:
            os.remove(full)
    os.rmdir(path)


class FlashFirmware(Firmware):
    def begin(self, size: int) -> bool:
        if not 0 < size <= MAX_IMAGE:
            return False
        with open(STAGE, "wb"):
            pass
        return True

    def append(self, data: bytes) -> bool:
        with open(STAGE, "ab") as f:
            f.write(data)
        return True

    def commit(self, version: str) -> bool:
        with open(STAGE, "rb") as f:
            files = fwimage.unpack(f.read())
        if files is None:
            return False
        _remove_tree("/board_new")
        os.mkdir("/board_new")
        for name, data in files:
            with open("/board_new/" + name, "wb") as f:
                f.write(data)
        with open("/board_new/VERSION", "w") as f:
            f.write(version)
        _remove_tree("/board_prev")
        os.rename("/board", "/board_prev")
        os.rename("/board_new", "/board")
        os.remove(STAGE)
        return True

    def version(self) -> str:
        try:
            with open("/board/VERSION") as f:
                return f.read().strip()
        except OSError:
            return ""

    def restart(self) -> None:
        machine.reset()
