"""The real face photos in tests/data/faces and the real engine, loaded once per session.

Photos are named ``<person>_<n>.<ext>``; ``two_people.jpg`` shows two faces. Encoding a
photo costs ~0.1–0.3 s, so each is encoded once and cached for every test that needs it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from hardware.face_engine import DlibFaceEngine
from server.sales.faces import AnalyzedPhoto, analyze_photo
from tests.conftest import FACES_DIR


@functools.cache
def engine() -> DlibFaceEngine:
    return DlibFaceEngine()


def photo(name: str) -> Path:
    matches = sorted(FACES_DIR.glob(f"{name}.*"))
    assert matches, f"no photo {name} in {FACES_DIR}"
    return matches[0]


@functools.cache
def analyzed(name: str) -> AnalyzedPhoto:
    return analyze_photo(engine(), str(photo(name)))


def vector(name: str) -> np.ndarray:
    return np.frombuffer(analyzed(name).encoding, "<f4")
