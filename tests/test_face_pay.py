"""Face pay at a terminal: real photos through the real engine, and the simulated path.

The terminal is real (its store, authorization, journal and display); it is not started, so
it has no server link, and the tests declare it in sync (``sync.assume``) — what the sync
agent would do on connect. Photos play the camera (``FileCamera``: 640-pixel frames).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.camera import FileCamera, SimulatedCamera
from hardware.display import MemoryDisplay
from hardware.face_engine import SimulatedFaceEngine, pseudo_encoding
from hardware.keypad import SimulatedKeypad
from shared.face_match import FacePolicy
from shared.protocol.face_vector import encoding_to_str
from shared.protocol.messages import decode_changes
from terminal.agent import Terminal
from terminal.authorize import TapRequest
from terminal.face_pay import PROMPT, FacePay
from tests import faces_support as fs
from tests.terminal_support import offline_config

LUNCH = {"meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200, "visitor_price_fen": None}}}
PEOPLE = {"H1": ("C10001", "obama_1"), "H2": ("C20002", "biden_1"), "H3": ("C30003", "alex_lacamoire_1")}


class Diner(SimulatedKeypad):
    """A diner at the keypad: types the next of ``entries`` each time a prompt starts
    (the prompt clears the keypad, so keys typed before it never count)."""

    def __init__(self, *entries: str) -> None:
        super().__init__()
        self.entries = list(entries)

    def clear(self) -> None:
        super().clear()
        if self.entries:
            self.press(self.entries.pop(0))


def cache_changes(encodings: dict[str, str]) -> tuple[dict, ...]:
    changes: list[dict] = [
        {"kind": "settings", "config": {}},
        {"kind": "canteen", "canteen_id": "C01", "config": {**LUNCH, "unit_id": "U01"}},
    ]
    for holder, (card, _) in PEOPLE.items():
        changes += [
            {
                "kind": "holder",
                "holder_id": holder,
                "unit_id": "U01",
                "subsidy_fen": 5000,
                "self_fen": 0,
                "blocked": False,
            },
            {"kind": "card", "card_id": card, "holder_id": holder, "status": "active"},
            {"kind": "face", "face_id": f"F-{holder}", "holder_id": holder, "encoding": encodings[holder]},
        ]
    return tuple(changes)


def make_terminal(tmp_path: Path, clock, encodings: dict[str, str]) -> Terminal:  # noqa: ANN001
    config = offline_config(tmp_path, terminal_id="T-face", canteen_id="C01")
    terminal = Terminal(config, clock, display=MemoryDisplay())
    terminal.store.apply_changes(1, decode_changes(cache_changes(encodings)), snapshot=True)
    terminal.sync.assume(in_sync=True)  # no network needed
    return terminal


@pytest.fixture
def real(tmp_path: Path, clock) -> Iterator[tuple[Terminal, Diner]]:  # noqa: ANN001
    terminal = make_terminal(
        tmp_path, clock, {h: encoding_to_str(fs.analyzed(photo).encoding) for h, (_, photo) in PEOPLE.items()}
    )
    yield terminal, Diner()
    terminal.store.close()


def pay(terminal: Terminal, keypad: Diner, photo: str, **kw: object):  # noqa: ANN201
    fp = FacePay(terminal, FileCamera(fs.photo(photo)), fs.engine(), keypad, key_timeout_s=2.0, **kw)
    try:
        return fp.pay()
    finally:
        fp.close()


def sales(terminal: Terminal) -> list[tuple]:
    return [tuple(r) for r in terminal.store.conn.execute("SELECT card_id, method, amount_fen FROM journal")]


def declines(terminal: Terminal) -> list[str]:
    return [r[0] for r in terminal.store.conn.execute("SELECT reason FROM declines WHERE method = 'face'")]


def test_a_recognised_face_pays_with_the_holders_card(real) -> None:  # noqa: ANN001
    terminal, keypad = real
    result = pay(terminal, keypad, "obama_2")
    assert result.approved and result.match.outcome == "accept"
    assert sales(terminal) == [("C10001", "face", 1200)]
    assert terminal.display.last.lines[0] == "支付成功" and terminal.display.last.tone == "ok"


def test_a_near_threshold_face_pays_only_after_the_right_card_digits(real) -> None:  # noqa: ANN001
    terminal, keypad = real
    keypad.entries = ["0003"]
    result = pay(terminal, keypad, "alex_lacamoire_2")
    assert result.match.outcome == "second_factor" and result.match.candidates == ("H3",)
    assert result.approved
    assert sales(terminal) == [("C30003", "face", 1200)]
    assert any(s.lines[0] == PROMPT for s in terminal.display.screens)


def test_wrong_card_digits_twice_decline_without_a_sale(real) -> None:  # noqa: ANN001
    terminal, keypad = real
    keypad.entries = ["1111", "0001"]  # 0001: H1's card, not a candidate for this face
    result = pay(terminal, keypad, "alex_lacamoire_2")
    assert not result.approved and result.resolution.reason == "second_factor_failed"
    assert sales(terminal) == []
    assert declines(terminal) == ["second_factor_failed"]
    assert terminal.display.last.lines == ("卡号后四位不符",) and terminal.display.last.tone == "error"


def test_digits_typed_before_the_prompt_do_not_count_and_no_digits_in_time_declines(real) -> None:  # noqa: ANN001
    terminal, _ = real
    keypad = SimulatedKeypad()
    keypad.press("0003")  # typed before the prompt
    fp = FacePay(terminal, FileCamera(fs.photo("alex_lacamoire_2")), fs.engine(), keypad, key_timeout_s=0.05)
    result = fp.pay()
    fp.close()
    assert result.resolution.reason == "input_timeout" and sales(terminal) == []


def test_a_stranger_is_not_recognised_and_nothing_is_charged(real) -> None:  # noqa: ANN001
    terminal, keypad = real
    result = pay(terminal, keypad, "rose_leslie_2")
    assert result.match.outcome == "no_match"
    assert sales(terminal) == [] and declines(terminal) == ["face_not_recognized"]
    assert terminal.display.last.lines == ("未识别，请刷卡或重试",)


def test_two_people_in_front_of_the_camera_are_asked_to_come_one_at_a_time(real) -> None:  # noqa: ANN001
    terminal, keypad = real
    result = pay(terminal, keypad, "two_people")
    assert result.match is None and result.resolution.reason == "face_one_at_a_time"
    assert sales(terminal) == []


def test_face_pay_goes_through_the_same_authorization_as_a_card(real, clock) -> None:  # noqa: ANN001
    terminal, keypad = real
    assert pay(terminal, keypad, "biden_2").approved
    result = pay(terminal, keypad, "biden_2")  # a second lunch: the canteen's meal limit
    assert not result.approved and result.decision.reason == "meal_limit_reached"
    clock.advance_ms(3 * 3600_000)  # 15:00: no meal served
    assert pay(terminal, keypad, "obama_2").decision.reason == "outside_meal_hours"


def test_a_shop_basket_can_be_paid_by_face(real) -> None:  # noqa: ANN001
    terminal, keypad = real
    fp = FacePay(terminal, FileCamera(fs.photo("obama_2")), fs.engine(), keypad)
    result = fp.pay(TapRequest(None, method="face", kind="shop", amount_fen=350))
    fp.close()
    assert result.approved and sales(terminal) == [("C10001", "face", 350)]


def test_the_simulated_camera_and_engine_drive_the_same_flow(tmp_path: Path, clock) -> None:  # noqa: ANN001
    encodings = {h: encoding_to_str(pseudo_encoding(h).astype("<f4").tobytes()) for h in PEOPLE}
    terminal = make_terminal(tmp_path, clock, encodings)
    camera = SimulatedCamera()
    fp = FacePay(terminal, camera, SimulatedFaceEngine(), SimulatedKeypad())
    camera.present("H2")
    assert fp.pay().approved
    camera.present("someone-else")
    assert fp.pay().resolution.reason == "face_not_recognized"
    camera.present(None)
    assert fp.pay().resolution.reason == "face_not_found"
    assert sales(terminal) == [("C20002", "face", 1200)]
    assert fp.gallery.loads == 1  # the gallery matrix was built once for all three
    fp.close()
    terminal.store.close()


def test_the_city_face_policy_applies_and_a_malformed_one_falls_back_to_the_defaults(real) -> None:  # noqa: ANN001
    terminal, keypad = real
    strict = {"threshold_milli": 450, "confident_milli": 300, "margin_milli": 100}
    terminal.store.apply_changes(2, decode_changes(({"kind": "settings", "config": {"face": strict}},)))
    fp = FacePay(terminal, FileCamera(fs.photo("obama_2")), fs.engine(), keypad)
    assert fp.policy().threshold == 0.45
    keypad.entries = ["0001"]
    result = fp.pay()  # 0.37 is no longer "confident": the diner must type the digits
    assert result.match.outcome == "second_factor" and result.approved
    terminal.store.apply_changes(
        3, decode_changes(({"kind": "settings", "config": {"face": {"threshold_milli": "high"}}},))
    )
    assert fp.policy() == FacePolicy()
    fp.close()


def test_the_face_key_on_the_keypad_starts_a_face_payment_in_the_device_loop(tmp_path: Path, clock) -> None:  # noqa: ANN001
    from simulator.waiting import wait_until
    from terminal.devices import FACE_KEY, DeviceLoop
    from terminal.readers import Order

    encodings = {h: encoding_to_str(pseudo_encoding(h).astype("<f4").tobytes()) for h in PEOPLE}
    terminal = make_terminal(tmp_path, clock, encodings)
    camera, keypad = SimulatedCamera(), SimulatedKeypad()
    loop = DeviceLoop(
        terminal,
        keypad=keypad,
        face_pay=FacePay(terminal, camera, SimulatedFaceEngine(), keypad),
        order=lambda: Order("shop", amount_fen=500),
    ).start()
    camera.present("H2")
    keypad.press("5")  # a stray key does nothing
    keypad.press(FACE_KEY)
    assert wait_until(lambda: sales(terminal) == [("C20002", "face", 500)], 30)
    loop.stop()
    terminal.store.close()
