"""Face enrollment on the server: photo → one 128-d encoding → the terminals' gallery.

* :func:`analyze_photo` (no database): the photo must show **exactly one** face, at least
  ``min_face_px`` tall; its encoding is computed by the face engine. The photo itself is
  never stored — only the encoding, which cannot be turned back into a picture.
* :func:`enroll` (inside the caller's write txn): stores the encoding and records a ``face``
  downstream change in the same transaction, so every terminal's gallery receives it in
  order (versioned like every other delta). A face too close to another person's enrolled
  face is refused: the gallery must never hold two people a terminal cannot tell apart.
* :func:`withdraw` (the person's right to withdraw, 撤回授权): deletes the encodings,
  records deletions for the terminals, and blanks the encodings out of the delta history,
  so no copy is left on the server. Only the fact that it happened stays (``face_events``).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardware.camera import Frame, decode_image
from hardware.face_engine import Box, FaceEngine, box_height
from server.downstream.changes import face_change
from server.downstream.deltas import record_delta
from shared.errors import DomainError
from shared.face_match import FacePolicy, Gallery

MAX_FACES_PER_HOLDER = 3
DEFAULT_MIN_FACE_PX = 80


@dataclass(frozen=True)
class AnalyzedPhoto:
    encoding: bytes  # 512 bytes, float32 little-endian
    face_px: int


def check_one_face(boxes: list[Box], min_face_px: int) -> Box:
    """The enrollment rule on detected boxes: exactly one face, of adequate size."""
    if not boxes:
        raise DomainError("face_not_found")
    if len(boxes) > 1:
        raise DomainError("face_multiple", f"{len(boxes)} faces")
    if box_height(boxes[0]) < min_face_px:
        raise DomainError("face_too_small", f"{box_height(boxes[0])} px < {min_face_px} px")
    return boxes[0]


def analyze_photo(
    engine: FaceEngine, image: bytes | str, min_face_px: int = DEFAULT_MIN_FACE_PX
) -> AnalyzedPhoto:
    """Detect (thoroughly, so a face in the background is seen) and encode one face."""
    frame = Frame(decode_image(image))
    box = check_one_face(engine.detect(frame, thorough=True), min_face_px)
    vector = engine.encode(frame, box)
    return AnalyzedPhoto(np.asarray(vector, dtype="<f4").tobytes(), box_height(box))


def gallery(conn: sqlite3.Connection, exclude_holder: str | None = None) -> Gallery:
    return Gallery.from_raw(
        (r[0], r[1], r[2])
        for r in conn.execute("SELECT face_id, holder_id, encoding FROM faces ORDER BY face_id")
        if r[1] != exclude_holder
    )


def enroll(
    conn: sqlite3.Connection,
    holder_id: str,
    photo: AnalyzedPhoto,
    now_ms: int,
    *,
    by: str = "",
    policy: FacePolicy | None = None,
) -> str:
    """Store an analysed face for a holder and send it to the terminals; returns face_id."""
    if conn.execute("SELECT 1 FROM holders WHERE id = ?", (holder_id,)).fetchone() is None:
        raise DomainError("not_found", f"holder {holder_id}")
    count = conn.execute("SELECT count(*) FROM faces WHERE holder_id = ?", (holder_id,)).fetchone()[0]
    if count >= MAX_FACES_PER_HOLDER:
        raise DomainError("face_limit_reached", f"{count} faces enrolled")
    policy = policy or FacePolicy()
    others = gallery(conn, exclude_holder=holder_id).nearest(np.frombuffer(photo.encoding, "<f4"), persons=1)
    if others and others[0][1] <= policy.threshold + policy.margin:
        raise DomainError("face_conflict", f"distance {others[0][1]:.3f} to another enrolled person")
    face_id = uuid.uuid4().hex
    conn.execute(
        "INSERT INTO faces(face_id, holder_id, encoding, face_px, enrolled_at_ms) VALUES (?, ?, ?, ?, ?)",
        (face_id, holder_id, photo.encoding, photo.face_px, now_ms),
    )
    conn.execute(
        "INSERT INTO face_events(holder_id, face_id, action, at_ms, by) VALUES (?, ?, 'enrolled', ?, ?)",
        (holder_id, face_id, now_ms, by),
    )
    record_delta(conn, [face_change(face_id, holder_id, photo.encoding)], now_ms)
    return face_id


def withdraw(
    conn: sqlite3.Connection, holder_id: str, now_ms: int, *, face_id: str | None = None, by: str = ""
) -> int:
    """Delete a holder's faces (or one of them) everywhere; returns how many."""
    if conn.execute("SELECT 1 FROM holders WHERE id = ?", (holder_id,)).fetchone() is None:
        raise DomainError("not_found", f"holder {holder_id}")
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT face_id FROM faces WHERE holder_id = ? AND (? IS NULL OR face_id = ?) ORDER BY face_id",
            (holder_id, face_id, face_id),
        )
    ]
    if face_id is not None and not ids:
        raise DomainError("not_found", f"face {face_id} of {holder_id}")
    for fid in ids:
        conn.execute("DELETE FROM faces WHERE face_id = ?", (fid,))
        conn.execute(
            "INSERT INTO face_events(holder_id, face_id, action, at_ms, by) VALUES (?, ?, 'deleted', ?, ?)",
            (holder_id, fid, now_ms, by),
        )
        _blank_history(conn, fid)
    if ids:
        record_delta(conn, [face_change(fid, holder_id, None) for fid in ids], now_ms)
    return len(ids)


def _blank_history(conn: sqlite3.Connection, face_id: str) -> None:
    """Turn the face's enrollment in old deltas into a deletion: a terminal catching up
    from before still ends with no such face, and the server keeps no copy of it."""
    needle = f'"face_id":"{face_id}"'
    for version, changes_json in conn.execute(
        "SELECT version, changes_json FROM deltas WHERE instr(changes_json, ?) > 0", (needle,)
    ).fetchall():
        changes = json.loads(changes_json)
        for c in changes:
            if c.get("kind") == "face" and c.get("face_id") == face_id:
                c["encoding"] = None
        conn.execute(
            "UPDATE deltas SET changes_json = ? WHERE version = ?",
            (json.dumps(changes, ensure_ascii=False, separators=(",", ":")), version),
        )


def list_faces(conn: sqlite3.Connection, holder_id: str) -> list[dict[str, Any]]:
    """A holder's enrolled faces (never the encodings)."""
    return [
        {"face_id": r[0], "face_px": r[1], "enrolled_at_ms": r[2]}
        for r in conn.execute(
            "SELECT face_id, face_px, enrolled_at_ms FROM faces WHERE holder_id = ? "
            "ORDER BY enrolled_at_ms, face_id",
            (holder_id,),
        )
    ]
