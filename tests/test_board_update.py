"""Board firmware updates over the board link: the terminal's driver ↔ a pseudo-terminal ↔
the board's own firmware logic, which checks the whole image's SHA-256 before it installs
anything (only the flash it installs on is simulated, ``hardware.board_sim.MemoryFirmware``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from hardware.board import core, frame, fwimage
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

FILES = [("core.py", b"# core\n" * 300), ("main.py", b"# main\n" * 200), ("frame.py", b"x = 1\n")]
IMAGE = fwimage.pack(FILES)


@pytest.fixture
def board() -> Iterator[SimulatedBoard]:
    with SimulatedBoard() as sim:
        yield sim


@pytest.fixture
def link(board: SimulatedBoard) -> Iterator[BoardLink]:
    link = open_board(board.port)
    assert link.ping()
    yield link
    link.close()


def push(
    link: BoardLink, image: bytes, announced: bytes, version: str = "2", order: list[int] | None = None
) -> bool:
    """Announce ``announced``'s size and SHA-256, send ``image``'s chunks (in ``order``), commit."""
    begin = len(announced).to_bytes(4, "big") + hashlib.sha256(announced).digest() + version.encode()
    assert link.command(frame.FW_BEGIN, begin)
    offsets = list(range(0, len(image), frame.FW_CHUNK_BYTES))
    for i in order or range(len(offsets)):
        chunk = image[offsets[i] : offsets[i] + frame.FW_CHUNK_BYTES]
        if not link.command(frame.FW_CHUNK, offsets[i].to_bytes(4, "big") + chunk):
            return False
    return link.command(frame.FW_COMMIT, b"")


def test_a_firmware_image_is_installed_and_the_board_comes_back_as_the_new_version(
    board: SimulatedBoard, link: BoardLink
) -> None:
    assert link.firmware_version == core.VERSION_NUMBER
    assert link.flash_firmware(IMAGE, "2")
    assert link.firmware_version == "2" and board.firmware.installed == dict(FILES)
    assert board.firmware.restarts == 1
    link.show(Screen(("支付成功",), "ok"))
    assert board.lines == ["支付成功"]  # and it still drives the screen


def test_an_image_altered_on_the_way_is_refused_and_the_old_firmware_stays(
    board: SimulatedBoard, link: BoardLink
) -> None:
    altered = bytearray(IMAGE)
    altered[500] ^= 0x01
    assert not push(link, bytes(altered), IMAGE)
    assert board.firmware.installed == {} and board.firmware.restarts == 0
    assert link.ping() and link.firmware_version == core.VERSION_NUMBER


def test_chunks_out_of_order_or_missing_are_refused(board: SimulatedBoard, link: BoardLink) -> None:
    chunks = len(range(0, len(IMAGE), frame.FW_CHUNK_BYTES))
    assert not push(link, IMAGE, IMAGE, order=[1, 0, *range(2, chunks)])
    assert not push(link, IMAGE, IMAGE, order=list(range(chunks - 1)))  # the last one never sent
    assert board.firmware.installed == {}
    assert push(link, IMAGE, IMAGE)  # and a whole one afterwards goes in


def test_a_board_without_a_firmware_store_refuses_updates() -> None:
    wire = MemoryLink()
    board = core.Board(wire, MemoryScreen(), QueueKeys(), RecordingSound(), RecordingLight())
    begin = len(IMAGE).to_bytes(4, "big") + hashlib.sha256(IMAGE).digest() + b"2"
    wire.inbox = frame.encode(frame.FW_BEGIN, bytes((7,)) + begin)
    board.step(0)
    assert wire.sent == [(frame.ACK, bytes((7, frame.STATUS_BAD)))]


def test_an_image_packs_and_unpacks_and_a_damaged_one_does_not() -> None:
    assert fwimage.unpack(IMAGE) == FILES
    assert fwimage.unpack(IMAGE[:-1]) is None
    assert fwimage.unpack(b"CBFW2\n" + IMAGE[6:]) is None
    with pytest.raises(ValueError):
        fwimage.pack([("../main.py", b"x")])
