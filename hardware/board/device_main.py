"""The board's own ``main.py`` (copy this file to ``:main.py``): start the firmware in
``/board``; if it cannot start after an update, go back to ``/board_prev`` and reset.

A firmware update (``flash.FlashFirmware``) keeps the previous firmware as ``/board_prev``
until the next update, so a new firmware that fails to import is replaced by the one that
worked, and the terminal sees the old version in the board's next ``HELLO``.
"""

import os

import machine


def start() -> None:
    try:
        # the installed firmware, imported by name: it may be broken, and may have been replaced
        firmware = __import__("board.main", None, None, ["run"])
    except Exception:  # noqa: BLE001 — any failure to start means: go back to the previous firmware
        names = os.listdir("/")
        if "board_prev" in names:
            if "board_bad" in names:
                for name in os.listdir("/board_bad"):
                    os.remove("/board_bad/" + name)
                os.rmdir("/board_bad")
            os.rename("/board", "/board_bad")
            os.rename("/board_prev", "/board")
            machine.reset()
        raise
    firmware.run()


start()
