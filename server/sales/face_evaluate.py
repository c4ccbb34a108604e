"""``faces evaluate``: how the configured threshold and margin do on a folder of photos.

A deployment runs it on photos of its own staff (``<person>_<n>.<ext>``) to tune the face
policy before face pay goes live. The first photo of each person is enrolled exactly as the
server enrolls (one face, adequate size); every other photo is a probe, matched 1:N with
the terminals' own rules (:func:`shared.face_match.decide`):

* **genuine** — against the full gallery: ``correct`` (accepted as the right person),
  ``second_factor`` (asked for the card digits), ``false_rejects`` (not recognised);
* **impostor** — the same probe against the gallery *without* its own person (a stranger at
  the camera), and probes of people whose enrollment was refused: any accept is a false
  accept, as is a genuine probe accepted as somebody else.

``genuine_distances`` (probe → own enrollment) and ``impostor_distances`` (probe → every
other person) show how much room the threshold has on both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardware.camera import IMAGE_SUFFIXES, Frame, decode_image
from hardware.face_engine import FaceEngine
from server.sales.faces import DEFAULT_MIN_FACE_PX, analyze_photo
from shared.errors import DomainError
from shared.face_match import FacePolicy, Gallery, choose_payer, decide

NAME = re.compile(r"^(?P<person>.+)_(?P<n>\d+)$")


@dataclass(frozen=True)
class Photo:
    path: Path
    person: str
    n: int


def photos_by_person(folder: Path) -> tuple[dict[str, list[Photo]], list[str]]:
    """Photos grouped by person (in number order), and the file names that do not fit."""
    people: dict[str, list[Photo]] = {}
    skipped: list[str] = []
    for f in sorted(folder.iterdir()):
        m = NAME.match(f.stem)
        if f.suffix.lower() not in IMAGE_SUFFIXES or m is None:
            skipped.append(f.name)
            continue
        people.setdefault(m["person"], []).append(Photo(f, m["person"], int(m["n"])))
    for photos in people.values():
        photos.sort(key=lambda p: p.n)
    return people, skipped


def probe_vector(engine: FaceEngine, path: Path) -> tuple[np.ndarray | None, str | None]:
    """The encoding of the face a terminal would take from this photo (the largest, clearly
    in front), or a refusal code."""
    frame = Frame(decode_image(path))
    boxes = engine.detect(frame, thorough=True)
    i, reason = choose_payer(boxes, min_face_px=0)
    if reason is not None:
        return None, reason
    return engine.encode(frame, boxes[i]), None


def evaluate(
    engine: FaceEngine, folder: Path, policy: FacePolicy, min_face_px: int = DEFAULT_MIN_FACE_PX
) -> dict[str, Any]:
    people, skipped = photos_by_person(folder)
    if not people:
        raise DomainError("invalid_input", f"no <person>_<n> photos in {folder}")
    enrolled: dict[str, np.ndarray] = {}
    refused: list[dict[str, str]] = []
    for person, photos in sorted(people.items()):
        try:
            enrolled[person] = np.frombuffer(
                analyze_photo(engine, str(photos[0].path), min_face_px).encoding, "<f4"
            )
        except DomainError as exc:
            refused.append({"photo": photos[0].path.name, "reason": exc.code})
    names = sorted(enrolled)
    full = Gallery(
        names, names, np.stack([enrolled[n] for n in names]) if names else np.zeros((0, 128), np.float32)
    )
    counts = {"correct": 0, "second_factor": 0, "false_rejects": 0, "false_accepts": 0, "impostor_probes": 0}
    results: list[dict[str, Any]] = []
    genuine: list[float] = []
    impostor: list[float] = []
    for person, photos in sorted(people.items()):
        for photo in photos[1:] if person in enrolled else photos:
            vec, reason = probe_vector(engine, photo.path)
            row: dict[str, Any] = {"probe": photo.path.name, "person": person}
            results.append(row)
            if vec is None:
                row["outcome"] = reason
                counts["false_rejects" if person in enrolled else "impostor_probes"] += 1
                continue
            for other, d in full.nearest(vec, persons=len(names)):
                (genuine if other == person else impostor).append(round(d, 3))
            if person in enrolled:
                m = decide(full.nearest(vec), policy)
                row.update(
                    outcome=m.outcome,
                    holder=m.holder_id,
                    distance=_r(m.distance),
                    candidates=list(m.candidates),
                )
                if m.outcome == "accept":
                    counts["correct" if m.holder_id == person else "false_accepts"] += 1
                elif m.outcome == "second_factor":
                    counts["second_factor"] += 1
                else:
                    counts["false_rejects"] += 1
            # as a stranger: the same face against everybody else
            others = [n for n in names if n != person]
            stranger = (
                Gallery(others, others, np.stack([enrolled[n] for n in others]))
                if others
                else Gallery.from_raw([])
            )
            s = decide(stranger.nearest(vec), policy)
            counts["impostor_probes"] += 1
            row["as_stranger"] = {"outcome": s.outcome, "holder": s.holder_id, "distance": _r(s.distance)}
            if s.outcome == "accept":
                counts["false_accepts"] += 1
    return {
        "enrolled": len(enrolled),
        "probes": sum(1 for r in results if r["person"] in enrolled),
        **counts,
        "threshold": policy.threshold,
        "margin": policy.margin,
        "confident": policy.confident,
        "genuine_distances": sorted(genuine),
        "impostor_distances": sorted(impostor),
        "refused": refused,
        "skipped": skipped,
        "results": results,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def render(report: dict[str, Any]) -> str:
    """The human-readable form (zh-CN / English labels)."""
    g, i = report["genuine_distances"], report["impostor_distances"]
    lines = [
        f"已登记 enrolled: {report['enrolled']}   探测 probes: {report['probes']}   "
        f"阈值 threshold: {report['threshold']}   间隔 margin: {report['margin']}   "
        f"确信 confident: {report['confident']}",
    ]
    for r in report["results"]:
        s = r.get("as_stranger", {})
        lines.append(
            f"  {r['probe']:<28} {r.get('outcome', ''):<14} {r.get('holder') or '':<16} "
            f"d={r.get('distance')}   as stranger: {s.get('outcome', '-')} d={s.get('distance', '-')}"
        )
    for ref in report["refused"]:
        lines.append(f"  登记被拒 enrollment refused: {ref['photo']} ({ref['reason']})")
    if report["skipped"]:
        lines.append(f"  忽略 skipped: {', '.join(report['skipped'])}")
    lines += [
        f"同一人距离 genuine distances:   {_span(g)}",
        f"不同人距离 impostor distances:  {_span(i)}",
        f"正确 correct: {report['correct']}   需第二因子 second factor: {report['second_factor']}   "
        f"误拒 false rejects: {report['false_rejects']}   误识 false accepts: {report['false_accepts']} "
        f"(of {report['impostor_probes']} impostor probes)",
    ]
    return "\n".join(lines)


def _span(xs: list[float]) -> str:
    return f"n={len(xs)} min={xs[0]} max={xs[-1]}" if xs else "n=0"
