"""Simulated faces for the city: enrollment photos and a face engine that reads them.

Thousands of real photos and dlib would make a city run take hours, so the city's face
pay uses a simulated engine on both sides of the real code paths:

* a diner's **enrollment photo** is a small PNG (:func:`photo_png`) whose first pixels spell
  a label; it is uploaded through the real ``POST /api/v1/holders/<id>/faces`` (decoded by
  the server's real image code, checked for exactly one face, stored, sent to every
  terminal's gallery by delta);
* at the counter the terminal's camera is a :class:`~hardware.camera.SimulatedCamera`
  showing that label, and :class:`~terminal.face_pay.FacePay` matches it 1:N against the
  gallery with the real policy (threshold and margin).

:class:`LabelFaceEngine` finds one 200-pixel face in any frame that carries a label (the
camera's) or spells one in its pixels (the photo), and encodes it as the same
label-derived vector :class:`~hardware.face_engine.SimulatedFaceEngine` uses, so
different people are far apart and the same person matches exactly.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from hardware.camera import Frame
from hardware.face_engine import SimulatedFaceEngine, pseudo_encoding

PHOTO_SIDE = 32
MAGIC = b"FACE:"


def photo_png(label: str) -> bytes:
    """A small PNG whose first row spells ``FACE:<label>`` (what the engine reads back)."""
    data = MAGIC + label.encode() + b"\0"
    if len(data) > PHOTO_SIDE * PHOTO_SIDE:
        raise ValueError("label too long for a photo")
    flat = np.zeros(PHOTO_SIDE * PHOTO_SIDE * 3, dtype=np.uint8)
    flat[0 : len(data) * 3 : 3] = np.frombuffer(data, dtype=np.uint8)  # the red channel carries it
    buf = io.BytesIO()
    Image.fromarray(flat.reshape(PHOTO_SIDE, PHOTO_SIDE, 3)).save(buf, format="PNG")
    return buf.getvalue()


def label_of(frame: Frame) -> str | None:
    """Who is in the frame: the camera's label, or the label a photo spells."""
    if frame.label:
        return frame.label
    if frame.image is None:
        return None
    red = frame.image.reshape(-1, 3)[:, 0].tobytes()
    if not red.startswith(MAGIC):
        return None
    return red[len(MAGIC) : red.index(b"\0", len(MAGIC))].decode()


class LabelFaceEngine:
    """A face engine for simulated people (see the module docstring)."""

    def detect(self, frame: Frame, *, thorough: bool = False) -> list[tuple[int, int, int, int]]:
        return [SimulatedFaceEngine.FACE_BOX] if label_of(frame) else []

    def encode(self, frame: Frame, box: tuple[int, int, int, int]) -> np.ndarray:
        label = label_of(frame)
        if label is None:
            raise ValueError("no face in this frame")
        return pseudo_encoding(label)
