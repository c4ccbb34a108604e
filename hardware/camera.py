"""Cameras: the interface, an image-file/replay source, and OpenCV / picamera2 drivers.

A camera yields :class:`Frame` objects: an RGB ``uint8`` array (height × width × 3) and,
for simulated frames, a ``label`` naming who is in front of it (the simulated face engine
reads that instead of pixels). Which camera runs is chosen by the terminal's configuration
through :func:`open_camera`:

* ``file:PATH`` — replays one image file, or every image in a folder in name order, again
  and again (a laptop, a test, a demo: real pixels through the real face engine);
* ``opencv:N`` — USB camera N through OpenCV, when ``cv2`` is installed;
* ``picamera2`` — the Raspberry Pi camera module, when ``picamera2`` is installed.

``cv2`` and ``picamera2`` are imported only here, and only when chosen. Images are decoded
with Pillow, honouring the EXIF orientation a phone writes into its photos.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import DomainError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MAX_IMAGE_PIXELS = 40_000_000  # a 40 MP photo is already far more than a face needs


@dataclass(frozen=True)
class Frame:
    image: np.ndarray | None  # RGB uint8, H×W×3; None for a purely simulated frame
    label: str | None = None  # simulated frames: whose face this is
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height); (0, 0) when there are no pixels."""
        if self.image is None:
            return (0, 0)
        return (int(self.image.shape[1]), int(self.image.shape[0]))


class Camera(Protocol):
    def capture(self) -> Frame | None:
        """The next frame, or None when the camera has none (yet)."""
        ...

    def close(self) -> None: ...


def decode_image(data: bytes | str | Path) -> np.ndarray:
    """Image bytes or a file path → RGB uint8 array, upright per EXIF. A file that is not
    an image, or an absurdly large one, is refused with ``invalid_input``."""
    try:
        src = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")
    except OSError as exc:
        raise DomainError("invalid_input", f"cannot read image: {exc}") from exc
    with src:
        try:
            with Image.open(src) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise DomainError("invalid_input", f"image too large: {im.width}×{im.height}")
                upright = ImageOps.exif_transpose(im) or im
                return np.asarray(upright.convert("RGB"))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise DomainError("invalid_input", f"not a readable image: {exc}") from exc


def fit_width(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most ``max_side``; returns (image, scale ≤ 1)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    small = Image.fromarray(image).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
    )
    return np.asarray(small), scale


class FileCamera:
    """Replays image files as camera frames (one file, or a folder's images in order)."""

    def __init__(self, path: str | Path, *, max_side: int = 640, loop: bool = True) -> None:
        p = Path(path)
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if p.is_dir() else [p]
        if not files:
            raise DomainError("invalid_input", f"no images in {p}")
        self.files = files
        self._max_side = max_side
        self._loop = loop
        self._next = 0
        self._lock = threading.Lock()

    def show(self, name: str) -> None:
        """Put the file whose name starts with ``name`` in front of the camera next."""
        for i, f in enumerate(self.files):
            if f.name.startswith(name):
                with self._lock:
                    self._next = i
                return
        raise DomainError("not_found", f"no image named {name}*")

    def capture(self) -> Frame | None:
        with self._lock:
            if self._next >= len(self.files):
                if not self._loop:
                    return None
                self._next = 0
            f = self.files[self._next]
            self._next += 1
        image, _ = fit_width(decode_image(f), self._max_side)
        return Frame(image, meta={"file": f.name})

    def close(self) -> None:
        return None


class SimulatedCamera:
    """Frames without pixels: ``present(label)`` puts a (simulated) person in front."""

    def __init__(self) -> None:
        self._label: str | None = None
        self._lock = threading.Lock()

    def present(self, label: str | None) -> None:
        with self._lock:
            self._label = label

    def capture(self) -> Frame | None:
        with self._lock:
            return Frame(None, self._label) if self._label is not None else None

    def close(self) -> None:
        return None


class OpenCVCamera:  # pragma: no cover - needs a camera and cv2
    """A USB camera through OpenCV (``opencv-python-headless``), 640×480."""

    def __init__(self, index: int = 0, width: int = 640, height: int = 480) -> None:
        import cv2  # the only import of OpenCV

        self._cv2 = cv2
        self._cap = cv2.VideoCapture(index)
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if not self._cap.isOpened():
            raise DomainError("invalid_input", f"camera {index} cannot be opened")

    def capture(self) -> Frame | None:
        ok, bgr = self._cap.read()
        if not ok:
            return None
        return Frame(self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        self._cap.release()


class Picamera2Camera:  # pragma: no cover - needs a Raspberry Pi camera
    """The Raspberry Pi camera module through picamera2, 640×480 RGB."""

    def __init__(self, width: int = 640, height: int = 480) -> None:
        from picamera2 import Picamera2  # the only import of picamera2

        self._cam = Picamera2()
        self._cam.configure(
            self._cam.create_preview_configuration(main={"size": (width, height), "format": "RGB888"})
        )
        self._cam.start()

    def capture(self) -> Frame | None:
        # picamera2's "RGB888" is B,G,R in memory order: flip to RGB
        return Frame(np.ascontiguousarray(self._cam.capture_array()[:, :, ::-1]))

    def close(self) -> None:
        self._cam.stop()


def open_camera(spec: str) -> Camera:
    """The camera a configuration string names (see the module docstring)."""
    kind, _, arg = spec.partition(":")
    if kind == "file":
        return FileCamera(arg)
    if kind == "simulated":
        return SimulatedCamera()
    if kind == "opencv":
        return OpenCVCamera(int(arg or 0))
    if kind == "picamera2":
        return Picamera2Camera()
    raise DomainError("invalid_input", f"unknown camera {spec!r} (file:PATH, simulated, opencv:N, picamera2)")
