"""Face enrollment over HTTP and the ``canteen-server faces`` commands, with real photos."""

from __future__ import annotations

import json

from click.testing import CliRunner

from server.cli.root import main as server_main
from server.infra.auth import create_token
from server.infra.db import open_db, set_setting, write_txn
from tests import faces_support as fs
from tests.conftest import FACES_DIR
from tests.helpers import populated


def tokens(conn, now_ms: int) -> dict[str, str]:  # noqa: ANN001
    with write_txn(conn):
        return {
            "admin": create_token(conn, "admin", now_ms),
            "clerk_u01": create_token(conn, "clerk", now_ms, unit_id="U01"),
            "clerk_u02": create_token(conn, "clerk", now_ms, unit_id="U02"),
        }


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def test_a_clerk_enrolls_lists_and_withdraws_a_face_of_their_own_staff(app, client, conn, clock) -> None:  # noqa: ANN001
    app.extensions["canteen_face_engine"] = fs.engine()
    world = populated(conn, clock.now_ms())
    tok = tokens(conn, clock.now_ms())
    holder = next(d for d in world.diners if d.unit_id == "U01").holder_id
    url = f"/api/v1/holders/{holder}/faces"
    r = client.post(
        url,
        data=fs.photo("obama_1").read_bytes(),
        headers=auth(tok["clerk_u01"], **{"Content-Type": "image/jpeg"}),
    )
    assert r.status_code == 201, r.get_json()
    face_id = r.get_json()["face_id"]
    listed = client.get(url, headers=auth(tok["admin"])).get_json()
    assert [f["face_id"] for f in listed] == [face_id] and "encoding" not in listed[0]
    assert client.get(url, headers=auth(tok["clerk_u02"])).status_code == 403
    r = client.delete(url, headers=auth(tok["clerk_u01"]))
    assert r.get_json() == {"holder_id": holder, "deleted": 1}
    assert client.get(url, headers=auth(tok["admin"])).get_json() == []


def test_a_photo_of_two_people_is_refused_with_a_chinese_message(app, client, conn, clock) -> None:  # noqa: ANN001
    app.extensions["canteen_face_engine"] = fs.engine()
    world = populated(conn, clock.now_ms())
    tok = tokens(conn, clock.now_ms())
    r = client.post(
        f"/api/v1/holders/{world.diners[0].holder_id}/faces",
        data={"photo": (fs.photo("two_people").open("rb"), "two_people.jpg")},
        headers=auth(tok["admin"], **{"Accept-Language": "zh-CN"}),
        content_type="multipart/form-data",
    )
    assert r.status_code == 400
    assert r.get_json()["code"] == "face_multiple"
    assert "多张人脸" in r.get_json()["message"]
    assert conn.execute("SELECT count(*) FROM faces").fetchone()[0] == 0


def test_an_empty_upload_or_an_unknown_holder_is_refused(app, client, conn, clock) -> None:  # noqa: ANN001
    app.extensions["canteen_face_engine"] = fs.engine()
    populated(conn, clock.now_ms())
    tok = tokens(conn, clock.now_ms())
    assert (
        client.post("/api/v1/holders/H00001/faces", headers=auth(tok["admin"])).get_json()["code"]
        == "invalid_input"
    )
    assert client.post("/api/v1/holders/NOPE/faces", data=b"x", headers=auth(tok["admin"])).status_code == 404


def test_evaluate_on_the_shared_photos_gives_no_false_accepts(tmp_path) -> None:  # noqa: ANN001
    result = CliRunner().invoke(
        server_main, ["--home", str(tmp_path), "faces", "evaluate", str(FACES_DIR), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"enrolled", "probes", "correct", "false_accepts", "false_rejects", "threshold", "margin"} <= set(
        report
    )
    assert report["enrolled"] == 5 and report["probes"] == 6
    assert report["false_accepts"] == 0
    assert report["false_rejects"] == 0
    assert report["correct"] + report["second_factor"] == report["probes"]
    assert max(report["genuine_distances"]) < min(report["impostor_distances"])
    assert "two_people.jpg" in report["skipped"]
    assert not (tmp_path / "server").exists()  # evaluating touches no database


def test_evaluate_counts_false_accepts_when_the_threshold_is_absurd(tmp_path) -> None:  # noqa: ANN001
    args = [
        "--home",
        str(tmp_path),
        "faces",
        "evaluate",
        str(FACES_DIR),
        "--json",
        "--threshold-milli",
        "1500",
        "--confident-milli",
        "1500",
        "--margin-milli",
        "0",
    ]
    report = json.loads(CliRunner().invoke(server_main, args).stdout)
    assert report["false_accepts"] > 0
    assert report["threshold"] == 1.5


def test_faces_enroll_and_delete_from_the_command_line(tmp_path, clock) -> None:  # noqa: ANN001
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    assert runner.invoke(server_main, [*home, "init"]).exit_code == 0
    conn = open_db(tmp_path / "server" / "canteen.sqlite")
    holder = populated(conn, clock.now_ms()).diners[0].holder_id
    conn.close()
    r = runner.invoke(
        server_main, [*home, "faces", "enroll", holder, str(fs.photo("rose_leslie_1")), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["holder_id"] == holder
    r = runner.invoke(server_main, [*home, "faces", "enroll", holder, str(fs.photo("two_people"))])
    assert r.exit_code == 2 and "face_multiple" in r.output
    r = runner.invoke(server_main, [*home, "faces", "delete", holder, "--json"])
    assert json.loads(r.stdout)["deleted"] == 1


def test_evaluate_reads_the_policy_from_the_database_the_configuration_names(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # the database is not at the data folder's default place (as with CANTEEN_DATABASE or a
    # PostgreSQL DATABASE_URL): the city's policy must still come from it
    database = tmp_path / "elsewhere" / "city.sqlite"
    monkeypatch.setenv("CANTEEN_DATABASE", str(database))
    home = ["--home", str(tmp_path / "home")]
    assert CliRunner().invoke(server_main, [*home, "init"]).exit_code == 0
    conn = open_db(database)
    face = {"threshold_milli": 1500, "confident_milli": 1500, "margin_milli": 0}
    with write_txn(conn):
        set_setting(conn, "terminal_settings", json.dumps({"face": face}))
    conn.close()
    result = CliRunner().invoke(server_main, [*home, "faces", "evaluate", str(FACES_DIR), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["threshold"] == 1.5 and report["false_accepts"] > 0
