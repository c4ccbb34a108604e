"""Face detection and 128-d encodings: face_recognition (dlib), or a simulated engine.

This is the ONLY module that imports ``face_recognition`` (and through it dlib); everything
else talks to the :class:`FaceEngine` interface and handles encodings as ``float32``
numpy vectors. The real engine is loaded lazily (dlib's models take a second to load).

Detection runs HOG on a copy shrunk to ``max_side`` pixels (640: a camera frame as is; a
large enrollment photo shrunk), with ``upsample`` passes (0 for frames, fast; 1 for
enrollment, so a small face in the background is not missed and the photo refused). Boxes
are returned in the original image's pixels, and the encoding is computed on the original
(sharper) pixels.

The simulated engine reads :attr:`Frame.label` instead of pixels: ``"obama"`` → the
encoding it was given for that label (or a fixed pseudo-random one), ``""`` → no face,
``"a+b"`` → two faces. It lets the simulator and fast tests run the whole face-pay flow.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np

from hardware.camera import Frame, fit_width
from shared.errors import DomainError

Box = tuple[int, int, int, int]  # top, right, bottom, left (face_recognition's order), pixels


def box_height(box: Box) -> int:
    return box[2] - box[0]


class FaceEngine(Protocol):
    def detect(self, frame: Frame, *, thorough: bool = False) -> list[Box]:
        """Face boxes in the frame (``thorough``: also small faces; slower)."""
        ...

    def encode(self, frame: Frame, box: Box) -> np.ndarray:
        """The 128-d float32 encoding of the face in ``box``."""
        ...


class DlibFaceEngine:
    """face_recognition 1.3 on dlib: HOG detector, 5-point alignment, ResNet encoder."""

    def __init__(
        self,
        *,
        max_side: int = 640,
        upsample: int = 0,
        thorough_max_side: int = 800,
        thorough_upsample: int = 1,
        jitters: int = 1,
    ) -> None:
        import face_recognition  # the only import of face_recognition / dlib in the project

        self._fr = face_recognition
        self.max_side = max_side
        self.upsample = upsample
        self.thorough_max_side = thorough_max_side
        self.thorough_upsample = thorough_upsample
        self.jitters = jitters

    def detect(self, frame: Frame, *, thorough: bool = False) -> list[Box]:
        if frame.image is None:
            return []
        max_side = self.thorough_max_side if thorough else self.max_side
        small, scale = fit_width(frame.image, max_side)
        boxes = self._fr.face_locations(small, self.thorough_upsample if thorough else self.upsample, "hog")
        h, w = frame.image.shape[:2]
        return [
            (
                max(0, round(t / scale)),
                min(w, round(r / scale)),
                min(h, round(b / scale)),
                max(0, round(left / scale)),
            )
            for t, r, b, left in boxes
        ]

    def encode(self, frame: Frame, box: Box) -> np.ndarray:
        if frame.image is None:
            raise ValueError("a frame without pixels cannot be encoded")
        (enc,) = self._fr.face_encodings(frame.image, [box], num_jitters=self.jitters, model="small")
        return np.asarray(enc, dtype=np.float32)


def pseudo_encoding(label: str) -> np.ndarray:
    """A fixed, label-derived vector with the spread of real encodings (norm ≈ 1), far
    (≈ 1.4) from any other label's."""
    seed = int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little")
    return (np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(128), 128)).astype(np.float32)


class SimulatedFaceEngine:
    """Faces from frame labels (see the module docstring); pixels are ignored."""

    FACE_BOX: Box = (100, 300, 300, 100)  # a 200-pixel face in the middle of a frame

    def __init__(self, known: dict[str, np.ndarray] | None = None) -> None:
        self.known = dict(known or {})

    def encoding_for(self, label: str) -> np.ndarray:
        return self.known[label] if label in self.known else pseudo_encoding(label)

    def detect(self, frame: Frame, *, thorough: bool = False) -> list[Box]:
        labels = [x for x in (frame.label or "").split("+") if x]
        return [
            (t, r + 400 * i, b, left + 400 * i)
            for i, (t, r, b, left) in enumerate([self.FACE_BOX] * len(labels))
        ]

    def encode(self, frame: Frame, box: Box) -> np.ndarray:
        labels = [x for x in (frame.label or "").split("+") if x]
        return self.encoding_for(labels[(box[3] - self.FACE_BOX[3]) // 400])


def open_face_engine(spec: str) -> FaceEngine:
    """``dlib`` (the real engine) or ``simulated``."""
    if spec == "dlib":
        return DlibFaceEngine()
    if spec == "simulated":
        return SimulatedFaceEngine()
    raise DomainError("invalid_input", f"unknown face engine {spec!r} (dlib, simulated)")
