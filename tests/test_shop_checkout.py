"""The cashier at a shop counter through the real device paths (issue 13): product barcodes
and payment codes interleaved on one serial scanner (a pty), the keypad and display of the
peripheral board (its firmware logic on a pty, :mod:`hardware.board_sim`); the basket paid
by card, phone code, digital RMB wallet or face; the operator's card switching the mode and
closing the day."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hardware.board_link import BoardLink, open_board
from hardware.board_sim import SimulatedBoard
from hardware.camera import SimulatedCamera
from hardware.face_engine import SimulatedFaceEngine, pseudo_encoding
from hardware.keypad import SimulatedKeypad
from shared.barcode import with_check_digit
from shared.clock import FakeClock
from shared.errors import DomainError
from shared.paycode import make_code
from shared.protocol.face_vector import encoding_to_str
from shared.protocol.messages import decode_changes
from simulator.waiting import wait_until
from terminal.agent import Terminal
from terminal.cli import main as terminal_cli
from terminal.config import TerminalConfig
from terminal.day_close import report_folder
from terminal.devices import FACE_KEY, DeviceLoop
from terminal.face_pay import FacePay
from tests.ident_helpers import CANTEEN, QR_SEED, offline_terminal
from tests.serial_support import raw_pty
from tests.test_face_pay import PEOPLE, make_terminal

WATER, TISSUE = "6901234567892", with_check_digit("690000000001")
SHOP = {
    **CANTEEN,
    "items": {
        "water": {"name": "矿泉水", "price_fen": 200, "reference_price_fen": 250, "barcodes": [WATER]},
        "1001": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400, "barcodes": [TISSUE]},
    },
    "max_typed_amount_fen": 5000,
    "operator_cards": ["OP1"],
}


def shop_terminal(tmp_path: Path, clock: FakeClock, **config: Any) -> tuple[Terminal, list[dict]]:
    t = offline_terminal(tmp_path, clock, **config)
    t.store.apply_changes(2, decode_changes(({"kind": "canteen", "canteen_id": "C01", "config": SHOP},)))
    t.sync.last_sync_ms = clock.now_ms()
    events: list[dict] = []
    t.on_event = events.append
    return t, events


def journal(t: Terminal) -> list[tuple[str, str, int, list[list[Any]]]]:
    out = []
    for method, kind, amount, raw in t.store.conn.execute(
        "SELECT method, kind, amount_fen, sale_json FROM journal ORDER BY seq"
    ):
        items = [
            [i["sku"], i["qty"], i["unit_price_fen"], i.get("reference_price_fen")]
            for i in json.loads(raw)["items"]
        ]
        out.append((method, kind, amount, items))
    return out


def on_the_board(t: Terminal, link: BoardLink) -> DeviceLoop:
    """The terminal's devices started, its display and keypad the board's."""
    t.display = link
    loop = DeviceLoop.from_config(t, t.config)
    loop.keypad = link
    loop.start()
    return loop


@pytest.fixture
def pty_port() -> Iterator[tuple[int, str]]:
    with raw_pty() as pair:
        yield pair


@pytest.fixture
def board() -> Iterator[tuple[SimulatedBoard, BoardLink]]:
    with SimulatedBoard() as sim:
        link = open_board(sim.port)
        yield sim, link
        link.close()


def test_barcodes_and_pay_codes_interleave_on_one_serial_scanner(
    tmp_path: Path, clock: FakeClock, pty_port
) -> None:  # noqa: ANN001
    master, port = pty_port
    t, events = shop_terminal(tmp_path, clock, qr_scanner=f"serial:{port},115200,crlf", mode="shop")
    loop = DeviceLoop.from_config(t, t.config).start()
    try:
        assert loop.scanner.ready.wait(30)
        for line in (WATER, TISSUE, WATER, make_code(QR_SEED, "C1", 1, clock.now_ms()), TISSUE):
            os.write(master, line.encode() + b"\r\n")
        assert wait_until(lambda: len([e for e in events if e.get("action") == "add"]) == 4, 30)
        assert t.approved == 1
        assert t.display.last.lines == ("抽纸 ×1 ¥3.50", "共1件 合计 ¥3.50", "扫码或输入商品号 #结算")
        # the diner's second code pays the new basket
        os.write(master, make_code(QR_SEED, "C1", 2, clock.now_ms()).encode() + b"\r\n")
        assert wait_until(lambda: t.approved == 2, 30)
        assert t.display.last.lines[0] == "支付成功"
    finally:
        loop.stop()
    assert journal(t) == [
        ("qr", "shop", 750, [["water", 2, 200, 250], ["1001", 1, 350, 400]]),
        ("qr", "shop", 350, [["1001", 1, 350, 400]]),
    ]
    assert [e["action"] for e in events if e["event"] == "basket"] == [
        "add",
        "add",
        "add",
        "paid",
        "add",
        "paid",
    ]
    t.store.close()


def test_the_keypad_builds_the_basket_on_the_board_and_a_card_pays_it(
    tmp_path: Path, clock: FakeClock, board
) -> None:  # noqa: ANN001
    sim, link = board
    t, events = shop_terminal(tmp_path, clock, mode="shop")
    loop = on_the_board(t, link)

    def after(keys: str, action: str, n: int = 1) -> None:
        count = len([e for e in events if e.get("action") == action or e.get("event") == action])
        sim.press(keys)
        assert wait_until(
            lambda: (
                len([e for e in events if e.get("action") == action or e.get("event") == action]) >= count + n
            ),
            10,
        ), events

    try:
        after("1001#", "add")  # an item code typed on the keypad
        assert sim.lines == ["抽纸 ×1 ¥3.50", "共1件 合计 ¥3.50", "扫码或输入商品号 #结算"]
        after("3B", "quantity")
        assert sim.lines[:2] == ["抽纸 ×3 ¥10.50", "共3件 合计 ¥10.50"]
        after(WATER + "#", "add")  # a barcode typed by hand
        after("C", "void")
        assert sim.lines[0] == "已撤销 矿泉水 ×1 ¥2.00"
        after("4242#", "basket_refused")
        assert sim.lines[0] == "商品不存在" and sim.light.colour == 2
        after("#", "checkout")
        assert sim.lines == ["共3件 合计 ¥10.50", "请刷卡、扫码或刷脸支付"]
        loop.reader.present("C1")
        assert wait_until(lambda: t.approved == 1, 30)
        assert wait_until(lambda: sim.lines[:2] == ["支付成功", "金额 ¥10.50"], 30)
        # a free amount where the canteen allows it, capped
        after("6000D", "basket_refused")
        assert sim.lines[0] == "手输金额超过本食堂上限"
        after("1250D", "amount")
        assert sim.lines[:2] == ["手输金额 ¥12.50", "手输金额 合计 ¥12.50"]
        loop.reader.present("C1")
        assert wait_until(lambda: t.approved == 2, 30)
        # '*' twice clears the basket
        after("1001#", "add")
        sim.press("*")
        assert wait_until(lambda: sim.lines[:1] == ["再按 * 清空购物篮"], 30)
        after("*", "clear")
        assert sim.lines == ["购物篮已清空", "请扫描商品"]
        loop.reader.present("C1")  # nothing to pay for
        assert wait_until(lambda: t.declined == 1, 30)
        assert sim.lines[0] == "购物篮为空，请先扫描商品"
    finally:
        loop.stop()
    assert journal(t) == [("card", "shop", 1050, [["1001", 3, 350, 400]]), ("card", "shop", 1250, [])]
    t.store.close()


def test_a_digital_rmb_wallet_pays_the_basket_with_its_items_and_references(
    tmp_path: Path, clock: FakeClock
) -> None:
    t, events = shop_terminal(tmp_path, clock, qr_scanner="simulated", mode="shop", ecny_gateway="simulated")
    loop = DeviceLoop.from_config(t, t.config).start()
    try:
        assert loop.cashier is not None
        loop.cashier.gateway.add_wallet("W1", 5_000)  # type: ignore[attr-defined]
        for code in (TISSUE, TISSUE):
            loop.scanner.present(code)
        assert wait_until(lambda: len([e for e in events if e.get("action") == "add"]) == 2, 30)
        loop.scanner.present(loop.cashier.gateway.payment_code("W1"))  # type: ignore[attr-defined]
        assert wait_until(lambda: t.approved == 1, 30)
        assert wait_until(lambda: loop.shop.basket.empty, 30)
    finally:
        loop.stop()
    assert journal(t) == [("ecny", "shop", 700, [["1001", 2, 350, 400]])]
    t.store.close()


def test_a_stale_price_list_is_refused_at_the_scan_with_a_chinese_message(
    tmp_path: Path, clock: FakeClock
) -> None:  # noqa: ANN001
    t, events = shop_terminal(tmp_path, clock, qr_scanner="simulated", mode="shop", online=False)
    t.store.apply_changes(
        3, decode_changes(({"kind": "settings", "config": {"risk": {"max_price_age_ms": 3_600_000}}},))
    )
    t.sync.last_sync_ms = clock.now_ms() - 2 * 3_600_000
    loop = DeviceLoop.from_config(t, t.config).start()
    try:
        loop.scanner.present(WATER)
        assert wait_until(lambda: any(e["event"] == "basket_refused" for e in events), 30)
        assert t.display.last.lines[0] == "价格表已过期，请联网更新后再售"
        assert loop.shop.basket.empty
        loop.scanner.present(with_check_digit("690000000009"))
        assert wait_until(lambda: len([e for e in events if e["event"] == "basket_refused"]) == 2, 30)
    finally:
        loop.stop()
    t.store.close()


def test_in_meal_mode_a_barcode_only_shows_the_item_and_a_card_pays_a_meal(
    tmp_path: Path, clock: FakeClock
) -> None:  # noqa: ANN001
    t, _ = shop_terminal(tmp_path, clock, qr_scanner="simulated")
    loop = DeviceLoop.from_config(t, t.config).start()
    try:
        loop.scanner.present(WATER)
        assert wait_until(
            lambda: t.display.last is not None and t.display.last.lines == ("矿泉水", "¥2.00"), 30
        )
        loop.reader.present("C1")
        assert wait_until(lambda: t.approved == 1, 30)
    finally:
        loop.stop()
    assert [(m, k, a) for m, k, a, _ in journal(t)] == [("card", "meal", 1200)]
    t.store.close()


def test_the_operator_card_switches_to_the_shop_and_closes_the_day(
    tmp_path: Path, clock: FakeClock, board
) -> None:  # noqa: ANN001
    sim, link = board
    t, events = shop_terminal(tmp_path, clock, qr_scanner="simulated")
    loop = on_the_board(t, link)

    def operator(*keys: str) -> None:
        n = len([e for e in events if e["event"] == "operator_menu"])
        loop.reader.present("OP1")
        assert wait_until(lambda: len([e for e in events if e["event"] == "operator_menu"]) > n, 30)
        assert wait_until(lambda: sim.lines[:1] and sim.lines[0].startswith("操作员菜单"), 30)
        for k in keys:
            sim.press(k)

    try:
        loop.reader.present("C1")  # a lunch in meal mode
        assert wait_until(lambda: t.approved == 1, 30)
        operator("2")
        assert wait_until(lambda: loop.shop.active, 30)
        assert sim.lines == ["已切换为超市收银模式", "请扫描商品条码"]
        loop.scanner.present(WATER)
        assert wait_until(lambda: any(e.get("action") == "add" for e in events), 30)
        loop.reader.present("C1")
        assert wait_until(lambda: t.approved == 2, 30)
        operator("3", "#")
        assert wait_until(lambda: any(e["event"] == "day_close" for e in events), 30)
        assert sim.lines == [
            "日结 Z0001 2026-01-06",
            "消费 2笔 ¥14.00",
            "冲正 0笔 净额 ¥14.00",
            "未上传 2笔 报表已保存",
        ]
        loop.scanner.present(WATER)  # still the shop after the close
        assert wait_until(lambda: len([e for e in events if e.get("action") == "add"]) == 2, 30)
        loop.reader.present("C1")
        assert wait_until(lambda: t.approved == 3, 30)
        operator("3", "#")
        assert wait_until(lambda: len([e for e in events if e["event"] == "day_close"]) == 2, 30)
    finally:
        loop.stop()
    kept = [
        (r[0], r[1], r[2]) for r in t.store.conn.execute("SELECT number, seq_from, seq_to FROM day_closes")
    ]
    assert kept == [(1, 1, 2), (2, 3, 3)]
    folder = report_folder(t.config)
    text = (folder / "Z0001-2026-01-06.txt").read_text(encoding="utf-8")
    assert "日结报表 Z0001" in text and "午餐" in text and "矿泉水" in text and "冲正合计" in text
    z2 = json.loads((folder / "Z0002-2026-01-06.json").read_text(encoding="utf-8"))
    assert (z2["sales"], z2["shop_items"]) == (
        {"count": 1, "amount_fen": 200},
        {"water": {"name": "矿泉水", "qty": 1, "amount_fen": 200}},
    )
    assert t.store.get_meta("cashier_mode") == "shop"  # kept across a restart
    config = tmp_path / "terminal.json"
    config.write_text(json.dumps(t.config.to_dict()), encoding="utf-8")
    listed = CliRunner().invoke(terminal_cli, ["closes", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [
        "Z0001 2026-01-06 消费 2 笔 ¥14.00 冲正 0 笔 净额 ¥14.00 · 未上传 not sent yet",
        "Z0002 2026-01-06 消费 1 笔 ¥2.00 冲正 0 笔 净额 ¥2.00 · 未上传 not sent yet",
    ]
    t.store.close()


def test_a_terminal_configured_for_neither_meals_nor_the_shop_is_refused(
    tmp_path: Path, clock: FakeClock
) -> None:
    t, _ = shop_terminal(tmp_path, clock)
    path = tmp_path / "terminal.json"
    path.write_text(json.dumps({**t.config.to_dict(), "mode": "bar"}), encoding="utf-8")
    with pytest.raises(DomainError) as exc:
        TerminalConfig.load(path)
    assert exc.value.code == "config_invalid" and 'key "mode" must be one of meal, shop' in exc.value.detail
    t.store.close()


def test_a_face_pays_the_basket_from_the_keypad(tmp_path: Path, clock: FakeClock) -> None:
    encodings = {h: encoding_to_str(pseudo_encoding(h).astype("<f4").tobytes()) for h in PEOPLE}
    t = make_terminal(tmp_path, clock, encodings)
    t.store.apply_changes(2, decode_changes(({"kind": "canteen", "canteen_id": "C01", "config": SHOP},)))
    events: list[dict] = []
    t.on_event = events.append
    camera, keypad = SimulatedCamera(), SimulatedKeypad()
    face = FacePay(t, camera, SimulatedFaceEngine(), keypad)
    loop = DeviceLoop(t, keypad=keypad, face_pay=face, mode="shop").start()
    try:
        keypad.press("1001#2B")
        assert wait_until(lambda: any(e.get("action") == "quantity" for e in events), 30)
        camera.present("H2")
        keypad.press(FACE_KEY)
        assert wait_until(lambda: t.approved == 1, 30)
    finally:
        loop.stop()
    assert journal(t) == [("face", "shop", 700, [["1001", 2, 350, 400]])]
    t.store.close()
