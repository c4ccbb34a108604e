"""The board's MicroPython firmware: type-checked against the RP2040 stubs, and its shared
modules running on CPython.

CPython cannot run ``machine``-based modules, so pyright is their test: ``make install`` puts
``micropython-rp2-stubs`` into ``hardware/board/stubs`` and pyright checks every firmware
module with those stubs as its standard library (``hardware/board/pyrightconfig.json``).
A misspelt ``Pin`` method or a CPython-only call is a failure here. The frame codec and the
board's logic (``frame``, ``core``) are written for both interpreters: the terminal's driver
and the simulated board import them on CPython.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hardware.board import core, frame
from hardware.board_sim import MemoryLink, MemoryScreen, QueueKeys, RecordingLight, RecordingSound

BOARD = Path(__file__).resolve().parent.parent / "hardware" / "board"
STUBS = BOARD / "stubs"
FIRMWARE = sorted(p.name for p in BOARD.glob("*.py"))


def pyright() -> str:
    exe = Path(sys.executable).parent / "pyright"
    found = str(exe) if exe.exists() else shutil.which("pyright")
    assert found, "pyright is not installed: run `make install`"
    return found


def run_pyright(project: Path) -> dict[str, Any]:
    """pyright's JSON report on ``project`` (its exit status is 1 when it found errors)."""
    assert (STUBS / "machine.pyi").exists(), "MicroPython stubs missing: run `make install`"
    result = subprocess.run(
        [pyright(), "-p", str(project), "--outputjson"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 2+: pyright itself failed
    report = json.loads(result.stdout)
    assert (result.returncode == 1) == (report["summary"]["errorCount"] > 0)
    return report


def errors(report: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(file name, 1-based line, message) of each error."""
    return sorted(
        (Path(d["file"]).name, d["range"]["start"]["line"] + 1, d["message"])
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    )


def test_the_firmware_type_checks_against_the_rp2_stubs() -> None:
    report = run_pyright(BOARD)
    assert errors(report) == []
    # every firmware module was checked (with the stubs as its standard library: a missing
    # `machine` would be an error), not an empty include
    assert report["summary"]["filesAnalyzed"] == len(FIRMWARE) >= 9


def plant(path: Path, after: str, line: str) -> int:
    """Insert ``line`` after the line ending in ``after``; returns its 1-based number."""
    lines = path.read_text().splitlines()
    at = next(i for i, text in enumerate(lines) if text.endswith(after)) + 1
    indent = lines[at - 1][: len(lines[at - 1]) - len(lines[at - 1].lstrip())]
    lines.insert(at, indent + line)
    path.write_text("\n".join(lines) + "\n")
    return at + 1


def test_the_type_check_catches_a_wrong_pin_method_and_a_cpython_only_call(tmp_path: Path) -> None:
    for name in FIRMWARE:
        shutil.copy(BOARD / name, tmp_path / name)
    config = json.loads((BOARD / "pyrightconfig.json").read_text())
    config.update(typeshedPath=str(STUBS), stubPath=str(STUBS))
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    wrong_pin = plant(
        tmp_path / "led.py", "self.red.value(1 if colour == frame.LED_RED else 0)", "self.red.toggle_all()"
    )
    cpython_only = plant(tmp_path / "main.py", "start = time.ticks_ms()", "time.perf_counter()")
    found = errors(run_pyright(tmp_path))
    # exactly the two planted errors: the copy itself checks clean against the stubs
    assert [(f, n) for f, n, _ in found] == [("led.py", wrong_pin), ("main.py", cpython_only)]
    assert "toggle_all" in found[0][2] and "perf_counter" in found[1][2]


def test_the_frame_codec_runs_on_cpython_too() -> None:
    assert frame.const(0xA5) == frame.START == 0xA5  # MicroPython's const(), as the identity
    payload = bytes([1, frame.TONE_OK]) + "支付成功".encode()
    wire = frame.encode(frame.SHOW, payload)
    # START, LEN, TYPE, payload, CRC-16/CCITT-FALSE big-endian: the bytes the board expects
    assert wire == bytes([0xA5, len(payload), frame.SHOW]) + payload + bytes.fromhex("ab37")
    decoder = frame.Decoder()
    assert decoder.feed(wire[:7]) == [] and decoder.pending() == 7
    assert decoder.feed(wire[7:]) == [(frame.SHOW, payload)]
    assert decoder.errors == 0 and decoder.pending() == 0


def test_the_board_main_loop_handles_a_frame_on_cpython_too() -> None:
    wire, screen, keys, sound, light = (
        MemoryLink(),
        MemoryScreen(),
        QueueKeys(),
        RecordingSound(),
        RecordingLight(),
    )
    board = core.Board(wire, screen, keys, sound, light)
    show = frame.encode(frame.SHOW, bytes([7, frame.TONE_OK]) + "支付成功\n¥12.00".encode())
    wire.inbox = show
    board.step(0)
    assert screen.shown == [(["支付成功", "¥12.00"], frame.TONE_OK)]
    assert light.colour == frame.LED_GREEN and sound.played == [frame.TONE_OK]
    assert wire.sent == [(frame.ACK, bytes([7, frame.STATUS_OK]))]
    wire.inbox = show  # the terminal resends (its ACK was lost): acknowledged, not shown twice
    keys.pressed.put("5")
    board.step(10)
    assert len(screen.shown) == 1 and board.handled == 1
    assert wire.sent[1:] == [(frame.ACK, bytes([7, frame.STATUS_OK])), (frame.KEY, b"5")]
