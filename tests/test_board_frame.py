"""The board's frame codec (the same module runs on the RP2040): round trips, corrupted
and truncated frames, resynchronisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.board import frame
from hardware.board.frame import Decoder, crc16, encode

payloads = st.binary(max_size=frame.MAX_PAYLOAD)
types = st.integers(0, 255)


def test_crc16_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1  # the standard check value


@given(st.lists(st.tuples(types, payloads), max_size=8), st.integers(1, 64))
def test_frames_round_trip_however_the_bytes_are_split(frames: list[tuple[int, bytes]], chunk: int) -> None:
    wire = b"".join(encode(t, p) for t, p in frames)
    d = Decoder()
    got = []
    for i in range(0, len(wire), chunk):
        got += d.feed(wire[i : i + chunk])
    assert got == frames and d.errors == 0 and d.pending() == 0


@given(st.lists(st.tuples(types, payloads), min_size=2, max_size=6, unique=True), st.data())
def test_one_corrupted_byte_costs_only_that_frame(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    encoded = [encode(t, p) for t, p in frames]
    victim = data.draw(st.integers(0, len(frames) - 1))
    bad = bytearray(encoded[victim])
    pos = data.draw(st.integers(0, len(bad) - 1))
    bad[pos] ^= data.draw(st.integers(1, 255))
    encoded[victim] = bytes(bad)
    d = Decoder()
    got = d.feed(b"".join(encoded)) + d.idle()  # idle: the line went quiet afterwards
    assert got == [f for i, f in enumerate(frames) if i != victim]
    assert d.errors >= 1 or pos == 0  # a lost START is skipped like line noise


def test_a_truncated_frame_is_dropped_when_the_line_goes_quiet_and_the_next_frames_survive() -> None:
    d = Decoder()
    cut = encode(frame.SHOW, b"\x01\x01" + "支付成功".encode())[:-3]
    assert d.feed(cut) == []
    assert d.pending() == len(cut)
    assert d.idle() == []
    assert d.pending() == 0 and d.errors >= 1
    assert d.feed(encode(frame.PING, b"\x02")) == [(frame.PING, b"\x02")]


def test_a_truncated_frame_followed_by_whole_frames_loses_only_itself() -> None:
    d = Decoder()
    whole = [encode(frame.KEY, b"1"), encode(frame.KEY, b"2")]
    wire = encode(frame.SHOW, b"\x05\x00" + b"x" * 100)[:20] + b"".join(whole)
    got = d.feed(wire) + d.idle()
    assert got == [(frame.KEY, b"1"), (frame.KEY, b"2")]


def test_garbage_between_frames_is_skipped() -> None:
    d = Decoder()
    wire = b"\x00\xff junk" + encode(frame.KEY, b"7") + b"\xa5\xff\x00noise" + encode(frame.KEY, b"8")
    assert d.feed(wire) + d.idle() == [(frame.KEY, b"7"), (frame.KEY, b"8")]


def test_a_payload_over_the_limit_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode(frame.SHOW, b"x" * (frame.MAX_PAYLOAD + 1))
