"""The peripheral board end to end: the terminal's pyserial driver ↔ a pseudo-terminal ↔
the board's own firmware logic (simulated peripherals). Also the board logic on its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hardware.board import core, frame
from hardware.board_link import BoardLink, open_board
from hardware.board_sim import (
    MemoryLink,
    MemoryScreen,
    QueueKeys,
    RecordingLight,
    RecordingSound,
    SimulatedBoard,
)
from hardware.display import Screen
from hardware.keypad import read_digits
from hardware.serial_port import Port, SerialSpec, open_port


@pytest.fixture
def board() -> Iterator[SimulatedBoard]:
    with SimulatedBoard() as sim:
        yield sim


@pytest.fixture
def link(board: SimulatedBoard) -> Iterator[BoardLink]:
    link = open_board(board.port)
    yield link
    link.close()


def test_the_terminal_finds_the_board_and_its_firmware(link: BoardLink) -> None:
    assert link.ping()
    assert link.version == core.VERSION


def test_approval_is_shown_in_chinese_green_with_a_beep(board: SimulatedBoard, link: BoardLink) -> None:
    link.show(Screen(("支付成功", "金额 ¥12.00"), "ok"))
    assert board.lines == ["支付成功", "金额 ¥12.00"]
    assert board.light.colour == frame.LED_GREEN and board.sound.played == [frame.TONE_OK]


def test_a_decline_is_shown_red_with_the_error_tone(board: SimulatedBoard, link: BoardLink) -> None:
    link.show(Screen(("余额不足",), "error"))
    assert board.screen.shown[-1] == (["余额不足"], frame.TONE_ERROR)
    assert board.light.colour == frame.LED_RED and board.sound.played == [frame.TONE_ERROR]


def test_keys_pressed_on_the_board_reach_the_terminal_in_order(
    board: SimulatedBoard, link: BoardLink
) -> None:
    board.press("42*")
    assert [link.read_key(2), link.read_key(2), link.read_key(2)] == ["4", "2", "*"]
    board.press("0815")
    assert read_digits(link, 4, timeout_s=30) == "0815"


def test_a_long_screen_is_cut_to_one_frame_at_a_character_boundary(
    board: SimulatedBoard, link: BoardLink
) -> None:
    link.show(Screen(("食" * 200,), "info"))
    assert board.lines[0] == "食" * ((frame.MAX_PAYLOAD - 2) // 3)


def raw_port(board: SimulatedBoard) -> Port:
    return open_port(SerialSpec(board.port, 115200), timeout_s=0.05)


class FlakyPort:
    """A serial port whose line corrupts or loses chosen writes (a hand-written fault)."""

    def __init__(self, inner: Port, corrupt: set[int], drop_acks: int = 0) -> None:
        self.inner = inner
        self.corrupt = corrupt
        self.drop_acks = drop_acks
        self.writes = 0

    def write(self, data: bytes) -> int | None:
        self.writes += 1
        if self.writes in self.corrupt:
            data = data[:4] + bytes([data[4] ^ 0x40]) + data[5:]
        return self.inner.write(data)

    def read(self, size: int = 1) -> bytes:
        data = self.inner.read(size)
        if self.drop_acks and data and data[0] == frame.START:
            rest = self.inner.read(6)  # an ACK frame is 7 bytes
            if rest[1:2] == bytes([frame.ACK]):
                self.drop_acks -= 1
                return b""
            return data + rest
        return data

    def close(self) -> None:
        self.inner.close()


def test_a_corrupted_command_is_resent_and_carried_out_once(board: SimulatedBoard) -> None:
    link = BoardLink(FlakyPort(raw_port(board), corrupt={1}), ack_timeout_s=0.2)
    try:
        link.show(Screen(("支付成功",), "ok"))
        assert link.resends >= 1  # (more if the machine is slow: resends are harmless)
        assert board.screen.shown == [(["支付成功"], frame.TONE_OK)]
        assert board.board.decoder.errors >= 1
    finally:
        link.close()


def test_a_lost_ack_makes_a_resend_that_the_board_does_not_carry_out_twice(board: SimulatedBoard) -> None:
    link = BoardLink(FlakyPort(raw_port(board), corrupt=set(), drop_acks=1), ack_timeout_s=0.2)
    try:
        assert link.beep("ok")
        assert link.resends >= 1
        assert board.sound.played == [frame.TONE_OK]  # once, though it arrived twice
    finally:
        link.close()


def test_a_silent_board_is_reported_not_fatal(board: SimulatedBoard) -> None:
    class Void:
        def write(self, data: bytes) -> int:
            return len(data)

        def read(self, size: int = 1) -> bytes:
            threading.Event().wait(0.01)
            return b""

        def close(self) -> None:
            pass

    link = BoardLink(Void(), ack_timeout_s=0.02, retries=2)
    assert not link.ping()
    link.show(Screen(("支付成功",), "ok"))  # logged; does not raise
    assert link.resends == 4
    link.close()


def make_board() -> tuple[core.Board, MemoryLink, MemoryScreen]:
    wire, screen = MemoryLink(), MemoryScreen()
    return core.Board(wire, screen, QueueKeys(), RecordingSound(), RecordingLight()), wire, screen


def test_the_board_refuses_a_malformed_command_with_a_bad_status() -> None:
    board, wire, screen = make_board()
    wire.inbox = frame.encode(frame.SHOW, b"\x07\x01\xff\xfe") + frame.encode(0x55, b"\x08")
    board.step(0)
    assert wire.sent == [(frame.ACK, bytes([7, frame.STATUS_BAD])), (frame.ACK, bytes([8, frame.STATUS_BAD]))]
    assert screen.shown == []


def test_the_board_drops_a_truncated_command_after_a_quiet_line() -> None:
    board, wire, screen = make_board()
    wire.inbox = frame.encode(frame.SHOW, b"\x01\x00hello")[:-2]
    board.step(0)
    board.step(core.QUIET_MS + 1)
    wire.inbox = frame.encode(frame.SHOW, b"\x02\x00ok")
    board.step(core.QUIET_MS + 2)
    assert screen.shown == [(["ok"], frame.TONE_INFO)]
    assert wire.sent == [(frame.ACK, bytes([2, frame.STATUS_OK]))]
