"""Face pay through the whole system: a photo enrolled over the HTTP API reaches a
terminal's gallery by MQTT delta; the diner pays by face at a terminal whose display and
keypad are the peripheral board (firmware logic on a pty, driven through pyserial); the
sale is applied at the server; a withdrawal removes the face from the terminal again."""

from __future__ import annotations

import json
import urllib.request

import pytest

from hardware.board_link import BoardLink, open_board
from hardware.board_sim import SimulatedBoard
from hardware.camera import FileCamera
from hardware.devices import open_devices
from shared.clock import FakeClock, ms_from_china
from shared.face_match import card_last4
from simulator.harness.cluster import Cluster
from simulator.waiting import wait_until
from terminal.face_cache import faces_version
from terminal.face_pay import PROMPT, FacePay
from tests import faces_support as fs

pytestmark = pytest.mark.broker


def call(cluster: Cluster, method: str, path: str, data: bytes | None = None) -> dict:
    assert cluster.server is not None
    req = urllib.request.Request(
        cluster.server.base_url + path,
        method=method,
        data=data,
        headers={"Authorization": f"Bearer {cluster.admin_token()}", "Content-Type": "image/jpeg"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_enroll_pay_by_face_on_the_board_and_withdraw(broker, tmp_path) -> None:  # noqa: ANN001
    clock = FakeClock(ms_from_china("2026-11-26T12:00"))
    with (
        Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster,
        SimulatedBoard() as board,
    ):
        cluster.server.app.extensions["canteen_face_engine"] = fs.engine()
        world = cluster.demo_world(6)
        obama, alex = world.diners[0], world.diners[1]
        handle = cluster.add_terminal("C01")
        terminal = handle.terminal
        link = open_board(board.port)
        terminal.display = link
        assert cluster.wait_synced()

        f1 = call(
            cluster, "POST", f"/api/v1/holders/{obama.holder_id}/faces", fs.photo("obama_1").read_bytes()
        )
        call(
            cluster,
            "POST",
            f"/api/v1/holders/{alex.holder_id}/faces",
            fs.photo("alex_lacamoire_1").read_bytes(),
        )
        assert cluster.wait_synced()
        assert terminal.store.conn.execute("SELECT count(*) FROM faces").fetchone()[0] == 2

        face_pay = FacePay(terminal, FileCamera(fs.photo("obama_2")), fs.engine(), link)
        result = face_pay.pay()
        assert result.approved, result
        assert board.lines[0] == "支付成功" and board.light.colour == 1

        # a near-threshold face: the board asks for the card digits, the diner types them
        def diner_types_card_digits(lines: list[str]) -> None:
            if lines[:2] == [PROMPT, "＿＿＿＿"]:
                board.press(card_last4(alex.card_id))

        board.on_show.append(diner_types_card_digits)
        face_pay.camera = FileCamera(fs.photo("alex_lacamoire_2"))
        result = face_pay.pay()
        assert result.match.outcome == "second_factor" and result.approved, result
        assert result.resolution.card_id == alex.card_id

        assert cluster.drain(30)
        conn = cluster.db()
        rows = conn.execute("SELECT card_id, method, status FROM sales ORDER BY seq").fetchall()
        conn.close()
        assert [tuple(r) for r in rows] == [
            (obama.card_id, "face", "applied"),
            (alex.card_id, "face", "applied"),
        ]
        assert cluster.audit().mismatches == 0

        # withdrawal: gone from the terminal's gallery, so the face no longer pays
        before = faces_version(terminal.store.conn)
        assert call(cluster, "DELETE", f"/api/v1/holders/{obama.holder_id}/faces")["deleted"] == 1
        assert wait_until(lambda: faces_version(terminal.store.conn) != before, 20)
        remaining = {r[0] for r in terminal.store.conn.execute("SELECT face_id FROM faces")}
        assert f1["face_id"] not in remaining and len(remaining) == 1
        face_pay.camera = FileCamera(fs.photo("obama_2"))
        assert face_pay.pay().resolution.reason == "face_not_recognized"
        assert board.lines == ["未识别，请刷卡或重试"] and board.light.colour == 2
        face_pay.close()
        link.close()


def test_devices_are_chosen_by_configuration() -> None:
    devices = open_devices("board-sim", "simulated", "simulated")
    try:
        assert isinstance(devices.display, BoardLink) and devices.keypad is devices.display
        assert devices.display.ping()
        assert devices.camera is not None and devices.face_engine is not None
    finally:
        devices.close()
    assert open_devices("memory").camera is None
