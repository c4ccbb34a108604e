"""Face pay: ``face.frame_to_decision_ms`` and ``face.match_50k_ms``.

* ``face.frame_to_decision_ms`` — one 640×480 camera frame made from a real photo
  (tests/data/faces, letterboxed to 640×480), through the terminal's path: HOG detection
  (upsample 0), choosing the payer, the 128-d encoding, and the 1:N match + decision
  against a gallery of the photos' enrollments padded with 1,000 synthetic faces. Median
  over the probe photos, several rounds. Target: < 250 ms.
* ``face.match_50k_ms`` — :func:`shared.face_match.match` alone, with 50,000 enrolled
  faces (synthetic encodings with the spread of real ones); median of 200 probes.
  Target: < 5 ms.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.run import Context, Result
from hardware.camera import Frame, decode_image
from hardware.face_engine import DlibFaceEngine
from shared.face_match import FacePolicy, Gallery, choose_payer, match

FACES = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"


def frame_640x480(path: Path) -> np.ndarray:
    """The photo scaled into a 640×480 frame (grey borders), as a camera would deliver."""
    im = Image.fromarray(decode_image(path))
    im.thumbnail((640, 480))
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    canvas.paste(im, ((640 - im.width) // 2, (480 - im.height) // 2))
    return np.asarray(canvas)


def synthetic(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1 / np.sqrt(128), (n, 128)).astype(np.float32)


def face_frame_to_decision_ms(ctx: Context, rounds: int = 3) -> list[Result]:
    engine = DlibFaceEngine()
    policy = FacePolicy()
    photos = sorted(p for p in FACES.glob("*_[0-9].*"))
    first = {}
    for p in photos:
        first.setdefault(p.stem.rsplit("_", 1)[0], p)
    enrolled = []
    for person, p in first.items():
        f = Frame(decode_image(p))
        enrolled.append((person, engine.encode(f, engine.detect(f, thorough=True)[0])))
    pad = synthetic(1000)
    gallery = Gallery(
        [f"F{i}" for i in range(len(enrolled) + len(pad))],
        [h for h, _ in enrolled] + [f"S{i}" for i in range(len(pad))],
        np.vstack([np.stack([v for _, v in enrolled]), pad]),
    )
    frames = [Frame(frame_640x480(p)) for p in photos if p not in first.values()]
    times, decided = [], 0
    for _ in range(rounds):
        for frame in frames:
            t0 = time.perf_counter()
            boxes = engine.detect(frame)
            i, reason = choose_payer(boxes, 40)
            if reason is None:
                m = match(gallery, engine.encode(frame, boxes[i]), policy)
                decided += m.outcome != "no_match"
            times.append((time.perf_counter() - t0) * 1000)
    return [
        Result(
            "face.frame_to_decision_ms",
            round(statistics.median(times), 1),
            "ms",
            {
                "frames": len(times),
                "size": "640x480",
                "gallery": len(gallery),
                "recognised": decided,
                "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 1),
            },
            target="< 250 ms",
        )
    ]


def face_match_50k_ms(ctx: Context, n: int = 50_000, probes: int = 200) -> list[Result]:
    matrix = synthetic(n)
    t0 = time.perf_counter()
    gallery = Gallery([f"F{i}" for i in range(n)], [f"H{i // 2}" for i in range(n)], matrix)
    build_ms = (time.perf_counter() - t0) * 1000
    policy = FacePolicy()
    rng = np.random.default_rng(2)
    queries = matrix[rng.integers(0, n, probes)] + rng.normal(0, 0.02, (probes, 128)).astype(np.float32)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        match(gallery, q, policy)
        times.append((time.perf_counter() - t0) * 1000)
    return [
        Result(
            "face.match_50k_ms",
            round(statistics.median(times), 3),
            "ms",
            {"enrolled": n, "probes": probes, "gallery_build_ms": round(build_ms, 1)},
            target="< 5 ms",
        )
    ]


BENCHMARKS = [face_frame_to_decision_ms, face_match_50k_ms]
