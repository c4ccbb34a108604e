"""Tap sources: the line format the simulator and the crash test speak, and reader choice."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from terminal.authorize import TapRequest
from terminal.readers import BadTap, open_source, parse_line


@pytest.mark.parametrize(
    ("line", "request_"),
    [
        ("C00001", TapRequest("C00001")),
        ("C00001 shop 1250", TapRequest("C00001", kind="shop", amount_fen=1250)),
        (
            "C00001 shop tissue*2 water",
            TapRequest("C00001", kind="shop", items=(("tissue", 2), ("water", 1))),
        ),
        (
            '{"card_id": "C7", "method": "face", "kind": "shop", "amount_fen": 5}',
            TapRequest("C7", "face", "shop", amount_fen=5),
        ),
        ('{"card_id": "C7", "method": "qr", "credential": "sig"}', TapRequest("C7", "qr", credential="sig")),
    ],
)
def test_a_line_is_a_tap(line: str, request_: TapRequest) -> None:
    assert parse_line(line) == request_


@pytest.mark.parametrize(
    "line",
    [
        "C1 lunch",
        "C1 shop",
        "C1 shop tissue*x",
        "{bad json",
        '{"card": 1}',
        '{"card_id": "C", "amount_fen": 1.5}',
    ],
)
def test_a_malformed_line_is_refused(line: str) -> None:
    with pytest.raises(BadTap):
        parse_line(line)


def test_blank_lines_are_not_taps() -> None:
    assert parse_line("   \n") is None


def test_stdin_taps_arrive_in_order_and_eof_is_quiet() -> None:
    source = open_source("stdin", io.StringIO("C1\nC2 shop 100\n"))
    got = [source.next(1.0), source.next(1.0), source.next(0.05)]
    assert got == [TapRequest("C1"), TapRequest("C2", kind="shop", amount_fen=100), None]


def test_a_fifo_reader_serves_one_writer_after_another(tmp_path: Path) -> None:
    path = str(tmp_path / "taps")
    source = open_source(f"fifo:{path}", io.StringIO())
    assert os.path.exists(path)

    def write(text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    threading.Thread(target=write, args=("C1\n",), daemon=True).start()
    assert source.next(5.0) == TapRequest("C1")
    assert source.next(0.2) is None  # the writer went away
    threading.Thread(target=write, args=("C2\n",), daemon=True).start()
    got = None
    for _ in range(25):
        got = got or source.next(0.2)
    assert got == TapRequest("C2")


@pytest.mark.parametrize("spec", ["bluetooth", "fifo", "nfc"])
def test_an_unknown_or_incomplete_reader_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ValueError, match="reader"):
        open_source(spec, io.StringIO())
