"""Face enrollment over HTTP: upload a photo, list a holder's faces, withdraw them.

``POST /api/v1/holders/<id>/faces`` takes the photo as the request body (``image/jpeg``,
``image/png`` …) or as the ``photo`` field of a multipart form. The photo is analysed in
memory and dropped; only the encoding is stored. A clerk may act only for holders of their
own unit. The face engine is created once per app and used by one request at a time
(dlib's networks are not safe to share between threads).
"""

from __future__ import annotations

import sqlite3
import threading

from flask import Blueprint, current_app, g, jsonify, request

from hardware.face_engine import DlibFaceEngine
from server.api.spec import doc
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.sales import faces
from shared.errors import DomainError

bp = Blueprint("faces", __name__, url_prefix="/api/v1/holders")

MAX_PHOTO_BYTES = 10 * 1024 * 1024
FACE = {
    "type": "object",
    "properties": {
        "face_id": {"type": "string"},
        "holder_id": {"type": "string"},
        "face_px": {"type": "integer"},
        "enrolled_at_ms": {"type": "integer"},
    },
}
_engine_lock = threading.Lock()


def _engine():  # noqa: ANN202
    engine = current_app.extensions.get("canteen_face_engine")
    if engine is None:
        engine = current_app.extensions["canteen_face_engine"] = DlibFaceEngine()
    return engine


def _check_scope(conn: sqlite3.Connection, holder_id: str) -> None:
    row = conn.execute("SELECT unit_id FROM holders WHERE id = ?", (holder_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"holder {holder_id}")
    if g.principal.role == "clerk" and g.principal.unit_id != row[0]:
        raise DomainError("forbidden", "a clerk acts only for their own unit's staff")


def _photo_bytes() -> bytes:
    if request.content_length is not None and request.content_length > MAX_PHOTO_BYTES + 4096:
        raise DomainError("too_large", f"photo over {MAX_PHOTO_BYTES} bytes")
    upload = request.files.get("photo")
    data = upload.read(MAX_PHOTO_BYTES + 1) if upload is not None else request.get_data(cache=False)
    if not data:
        raise DomainError("invalid_input", "send the photo as the body or as the 'photo' form field")
    if len(data) > MAX_PHOTO_BYTES:
        raise DomainError("too_large", f"photo over {MAX_PHOTO_BYTES} bytes")
    return data


@bp.post("/<holder_id>/faces")
@doc(
    "Enroll a face from a photo (exactly one face; the photo is not kept)",
    response=FACE,
    status=201,
    content_type="application/json",
)
@requires("admin", "clerk")
def enroll(holder_id: str):  # noqa: ANN201
    conn = get_db()
    _check_scope(conn, holder_id)
    data = _photo_bytes()
    with _engine_lock:
        analyzed = faces.analyze_photo(_engine(), data)
    now = get_clock().now_ms()
    with write_txn(conn):
        face_id = faces.enroll(conn, holder_id, analyzed, now, by=g.principal.role)
    return jsonify(
        {"face_id": face_id, "holder_id": holder_id, "face_px": analyzed.face_px, "enrolled_at_ms": now}
    ), 201


@bp.get("/<holder_id>/faces")
@doc(
    "A holder's enrolled faces (ids and dates; never the encodings)",
    response={"type": "array", "items": FACE},
)
@requires("admin", "clerk", "auditor")
def list_faces(holder_id: str):  # noqa: ANN201
    conn = get_db()
    _check_scope(conn, holder_id)
    return jsonify([{**f, "holder_id": holder_id} for f in faces.list_faces(conn, holder_id)])


@bp.delete("/<holder_id>/faces")
@doc(
    "Withdraw a holder's faces (all, or one by face_id): deleted on the server and every terminal",
    query={"face_id": {"type": "string"}},
    response={
        "type": "object",
        "properties": {"holder_id": {"type": "string"}, "deleted": {"type": "integer"}},
    },
)
@requires("admin", "clerk")
def withdraw(holder_id: str):  # noqa: ANN201
    conn = get_db()
    _check_scope(conn, holder_id)
    with write_txn(conn):
        n = faces.withdraw(
            conn, holder_id, get_clock().now_ms(), face_id=request.args.get("face_id"), by=g.principal.role
        )
    return jsonify({"holder_id": holder_id, "deleted": n})
