"""Firmware of the peripheral board (MicroPython, RP2040): customer display, keypad,
buzzer and LED, talking to the terminal over USB serial in framed messages.

On the board this folder is the package ``board``: copy its ``.py`` files to ``:board/``
with mpremote (leaving out ``stubs/``) and copy ``device_main.py`` as the device's own
``main.py`` (it runs ``board.main.run()`` and falls back to the previous firmware after an
update that does not start). Later firmware comes through the terminal as a signed update
(``flash``, ``fwimage``). On CPython the same modules import as ``hardware.board``:
:mod:`~hardware.board.frame` (the frame codec, shared with the terminal's driver) and
:mod:`~hardware.board.core` (the board's logic, which the simulated board runs on a
pseudo-terminal). Only ``hmi``, ``matrix``, ``buzzer``, ``led``, ``usb``, ``flash``,
``device_main`` and ``main`` touch ``machine``; they are type-checked against
``micropython-rp2-stubs`` in the test suite (tests/test_board_firmware.py), since CPython
cannot run them.
"""
