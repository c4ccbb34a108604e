"""Choosing device drivers from configuration strings (one place, at the edge).

* ``display``: ``console`` · ``memory`` · ``board:/dev/ttyACM0`` (the peripheral board over
  USB serial) · ``board-sim`` (the board's own firmware logic on a pseudo-terminal);
* the keypad: the board's when the display is a board, else a simulated one;
* ``camera``: ``""`` (no face pay) · ``file:PATH`` · ``simulated`` · ``opencv:N`` · ``picamera2``;
* ``face_engine``: ``dlib`` · ``simulated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from hardware.board_link import open_board
from hardware.board_sim import SimulatedBoard
from hardware.camera import Camera, open_camera
from hardware.display import ConsoleDisplay, Display, MemoryDisplay
from hardware.face_engine import FaceEngine, open_face_engine
from hardware.keypad import Keypad, SimulatedKeypad
from shared.errors import DomainError


@dataclass
class Devices:
    display: Display
    keypad: Keypad
    camera: Camera | None = None
    face_engine: FaceEngine | None = None
    _closers: tuple = ()

    def close(self) -> None:
        for close in self._closers:
            close()


def open_devices(
    display: str = "console", camera: str = "", face_engine: str = "dlib", *, console: TextIO | None = None
) -> Devices:
    """The devices a terminal's config names; ``console`` is the stream a console display
    writes to (stdout by default; ``canteen-terminal run --events`` keeps stdout for events)."""
    closers: list = []
    keypad: Keypad | None = None
    shown: Display
    if display == "console":
        shown = ConsoleDisplay(console)
    elif display == "memory":
        shown = MemoryDisplay()
    elif display.startswith("board:") or display == "board-sim":
        port = display.partition(":")[2]
        if display == "board-sim":
            sim = SimulatedBoard().start()
            closers.append(sim.stop)
            port = sim.port
        link = open_board(port)
        closers.insert(0, link.close)
        shown = keypad = link
    else:
        raise DomainError("invalid_input", f"unknown display {display!r}")
    cam = open_camera(camera) if camera else None
    if cam is not None:
        closers.append(cam.close)
    engine = open_face_engine(face_engine) if cam is not None else None
    return Devices(shown, keypad or SimulatedKeypad(), cam, engine, tuple(closers))
