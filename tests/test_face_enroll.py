"""Face enrollment on the server with the real photos, and the gallery reaching terminals."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from server.downstream.deltas import deltas_since
from server.downstream.snapshot import build_snapshot
from server.infra.db import write_txn
from server.sales import faces
from shared.errors import DomainError
from shared.face_match import FacePolicy, match
from shared.protocol import Delta, ProtocolError
from shared.protocol.face_vector import encoding_from_str, encoding_to_str, pack_encoding
from shared.protocol.messages import FaceChange, decode_change, decode_changes
from terminal.face_cache import GalleryCache
from terminal.store import Store
from tests import faces_support as fs
from tests.helpers import populated


def enroll(conn: sqlite3.Connection, holder_id: str, name: str, now_ms: int) -> str:
    with write_txn(conn):
        return faces.enroll(conn, holder_id, fs.analyzed(name), now_ms, by="test")


def test_enrollment_takes_exactly_one_face_of_adequate_size() -> None:
    one = fs.analyzed("obama_1")
    assert len(one.encoding) == 512 and one.face_px >= 80
    with pytest.raises(DomainError) as exc:
        faces.analyze_photo(fs.engine(), str(fs.photo("two_people")))
    assert exc.value.code == "face_multiple"
    with pytest.raises(DomainError) as exc:
        faces.analyze_photo(fs.engine(), str(fs.photo("obama_1")), min_face_px=1000)
    assert exc.value.code == "face_too_small"


def test_a_photo_without_a_face_or_not_an_image_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (400, 300), (200, 180, 160)).save(tmp_path / "wall.png")
    with pytest.raises(DomainError) as exc:
        faces.analyze_photo(fs.engine(), str(tmp_path / "wall.png"))
    assert exc.value.code == "face_not_found"
    with pytest.raises(DomainError) as exc:
        faces.analyze_photo(fs.engine(), b"not an image at all")
    assert exc.value.code == "invalid_input"


def test_an_enrolled_face_is_a_delta_and_in_the_snapshot_but_the_photo_is_not_kept(conn, clock) -> None:  # noqa: ANN001
    world = populated(conn, clock.now_ms())
    before = build_snapshot(conn).version
    face_id = enroll(conn, world.diners[0].holder_id, "obama_1", clock.now_ms())
    (delta,) = deltas_since(conn, before)
    (change,) = delta.changes
    assert change["kind"] == "face" and change["face_id"] == face_id
    assert encoding_from_str(change["encoding"]) == fs.analyzed("obama_1").encoding
    Delta.from_body(json.loads(json.dumps(delta.to_body())))  # valid on the wire
    snap = build_snapshot(conn)
    assert [c["face_id"] for c in snap.changes if c["kind"] == "face"] == [face_id]
    columns = {d[0] for d in conn.execute("SELECT * FROM faces LIMIT 0").description}
    assert columns == {"face_id", "holder_id", "encoding", "face_px", "enrolled_at_ms"}  # no photo


def test_a_face_too_close_to_another_persons_is_refused(conn, clock) -> None:  # noqa: ANN001
    world = populated(conn, clock.now_ms())
    enroll(conn, world.diners[0].holder_id, "obama_1", clock.now_ms())
    with pytest.raises(DomainError) as exc:
        enroll(conn, world.diners[1].holder_id, "obama_2", clock.now_ms())
    assert exc.value.code == "face_conflict"
    enroll(conn, world.diners[0].holder_id, "obama_2", clock.now_ms())  # the same person may add one
    assert len(faces.list_faces(conn, world.diners[0].holder_id)) == 2


def test_withdrawal_deletes_the_face_everywhere_including_the_delta_history(conn, clock) -> None:  # noqa: ANN001
    world = populated(conn, clock.now_ms())
    holder = world.diners[0].holder_id
    face_id = enroll(conn, holder, "biden_1", clock.now_ms())
    with write_txn(conn):
        assert faces.withdraw(conn, holder, clock.now_ms(), by="test") == 1
    assert faces.list_faces(conn, holder) == []
    assert not [c for c in build_snapshot(conn).changes if c["kind"] == "face"]
    history = [c for d in deltas_since(conn, 0) for c in d.changes if c.get("face_id") == face_id]
    assert len(history) == 2 and all(c["encoding"] is None for c in history)
    assert (
        conn.execute(
            "SELECT count(*) FROM deltas WHERE instr(changes_json, ?) > 0",
            (encoding_to_str(fs.analyzed("biden_1").encoding)[:40],),
        ).fetchone()[0]
        == 0
    )
    events = [
        r[0]
        for r in conn.execute("SELECT action FROM face_events WHERE holder_id = ? ORDER BY id", (holder,))
    ]
    assert events == ["enrolled", "deleted"]
    with write_txn(conn), pytest.raises(DomainError):
        faces.withdraw(conn, holder, clock.now_ms(), face_id="nope")


def test_enrollment_refuses_unknown_holders_and_too_many_faces(conn, clock) -> None:  # noqa: ANN001
    world = populated(conn, clock.now_ms())
    with pytest.raises(DomainError) as exc:
        enroll(conn, "H-nobody", "rose_leslie_1", clock.now_ms())
    assert exc.value.code == "not_found"
    holder = world.diners[0].holder_id
    for _ in range(faces.MAX_FACES_PER_HOLDER):
        enroll(conn, holder, "rose_leslie_1", clock.now_ms())
    with pytest.raises(DomainError) as exc:
        enroll(conn, holder, "rose_leslie_2", clock.now_ms())
    assert exc.value.code == "face_limit_reached"


def test_the_face_change_is_validated_on_the_wire() -> None:
    good = {
        "kind": "face",
        "face_id": "F1",
        "holder_id": "H1",
        "encoding": encoding_to_str(pack_encoding([0.1] * 128)),
    }
    change = decode_change(good)
    assert isinstance(change, FaceChange) and change.encoding == pack_encoding(
        [0.1] * 128
    )  # decoded once, here
    assert change.to_wire() == good
    assert decode_change({**good, "encoding": None}) == FaceChange("F1", "H1", None)
    for bad in (
        {**good, "encoding": "AAAA"},
        {**good, "encoding": encoding_to_str(pack_encoding([0.1] * 128))[:-4] + "!!!!"},
        {**good, "encoding": base64.b64encode(pack_encoding([float("nan")] + [0.0] * 127)).decode()},
        {k: v for k, v in good.items() if k != "encoding"},
        {**good, "extra": 1},
    ):
        with pytest.raises(ProtocolError):
            decode_change(bad)


def test_the_terminal_gallery_follows_enrollments_and_deletions(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.sqlite")
    enc = {n: encoding_to_str(fs.analyzed(n).encoding) for n in ("obama_1", "biden_1")}
    store.apply_changes(
        1, decode_changes(({"kind": "face", "face_id": "F1", "holder_id": "H1", "encoding": enc["obama_1"]},))
    )
    cache = GalleryCache(store.conn)
    policy = FacePolicy()
    assert match(cache.gallery(), fs.vector("obama_2"), policy).holder_id == "H1"
    assert match(cache.gallery(), fs.vector("biden_2"), policy).outcome == "no_match"
    assert cache.loads == 1  # loaded once, not per frame
    store.apply_changes(
        2, decode_changes(({"kind": "face", "face_id": "F2", "holder_id": "H2", "encoding": enc["biden_1"]},))
    )
    assert match(cache.gallery(), fs.vector("biden_2"), policy).holder_id == "H2"
    store.apply_changes(
        3, decode_changes(({"kind": "face", "face_id": "F1", "holder_id": "H1", "encoding": None},))
    )
    assert match(cache.gallery(), fs.vector("obama_2"), policy).outcome == "no_match"
    assert cache.loads == 3
    store.apply_changes(4, (), snapshot=True)  # a snapshot without faces empties the gallery
    assert len(cache.gallery()) == 0
    assert np.asarray(cache.gallery().matrix).shape == (0, 128)
