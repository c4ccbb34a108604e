"""The terminal's face gallery: cached encodings, and the matrix built from them once.

``face`` downstream changes land in the ``faces`` table (:func:`apply_face_change`, called
by the store inside the delta's transaction); each bumps the ``faces_version`` meta value.
:class:`GalleryCache` builds the numpy :class:`~shared.face_match.Gallery` from the table
once and rebuilds it only when ``faces_version`` moved, so a frame costs one tiny query and
a matrix product, never a reload. Also here: the cards a holder may pay with.
"""

from __future__ import annotations

import sqlite3
import threading

from shared.face_match import Gallery
from shared.protocol.messages import FaceChange

FACES_VERSION_KEY = "faces_version"


def apply_face_change(conn: sqlite3.Connection, change: FaceChange, version: int) -> None:
    """Store or delete one enrolled face (inside the caller's transaction)."""
    if change.encoding is None:
        conn.execute("DELETE FROM faces WHERE face_id = ?", (change.face_id,))
    else:
        conn.execute(
            "INSERT INTO faces(face_id, holder_id, encoding) VALUES (?, ?, ?) "
            "ON CONFLICT(face_id) DO UPDATE SET holder_id = excluded.holder_id, encoding = excluded.encoding",
            (change.face_id, change.holder_id, change.encoding),
        )
    bump_version(conn, version)


def clear_faces(conn: sqlite3.Connection, version: int) -> None:
    """A snapshot replaces the whole gallery."""
    conn.execute("DELETE FROM faces")
    bump_version(conn, version)


def bump_version(conn: sqlite3.Connection, version: int) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (FACES_VERSION_KEY, str(version)),
    )


def faces_version(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (FACES_VERSION_KEY,)).fetchone()
    return row[0] if row else "0"


def active_cards(conn: sqlite3.Connection, holder_id: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT card_id FROM cards WHERE holder_id = ? AND status = 'active' ORDER BY card_id",
            (holder_id,),
        )
    ]


class GalleryCache:
    """The gallery matrix for one terminal database, rebuilt only after gallery changes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._version: str | None = None
        self._gallery = Gallery.from_raw([])
        self.loads = 0

    def gallery(self) -> Gallery:
        with self._lock:
            version = faces_version(self._conn)
            if version != self._version:
                rows = self._conn.execute(
                    "SELECT face_id, holder_id, encoding FROM faces ORDER BY face_id"
                ).fetchall()
                self._gallery = Gallery.from_raw((r[0], r[1], bytes(r[2])) for r in rows)
                self._version = version
                self.loads += 1
            return self._gallery
