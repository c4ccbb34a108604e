"""The board's MicroPython firmware type-checks against the RP2040 stubs (pyright).

CPython cannot run ``machine``-based modules, so this is their test: ``make install`` puts
``micropython-rp2-stubs`` into ``hardware/board/stubs`` and pyright checks every firmware
module with those stubs as its standard library (``hardware/board/pyrightconfig.json``).
A misspelt ``Pin`` method or a CPython-only call is a failure here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BOARD = Path(__file__).resolve().parent.parent / "hardware" / "board"
STUBS = BOARD / "stubs"


def pyright() -> str:
    exe = Path(sys.executable).parent / "pyright"
    found = str(exe) if exe.exists() else shutil.which("pyright")
    assert found, "pyright is not installed: run `make install`"
    return found


def run_pyright(project: Path) -> subprocess.CompletedProcess[str]:
    assert (STUBS / "machine.pyi").exists(), "MicroPython stubs missing: run `make install`"
    return subprocess.run([pyright(), "-p", str(project)], capture_output=True, text=True, timeout=300)


def test_the_firmware_type_checks_against_the_rp2_stubs() -> None:
    result = run_pyright(BOARD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_the_type_check_catches_a_wrong_pin_method(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("from machine import Pin\n\ndef f(p: Pin) -> None:\n    p.toggle_all()\n")
    config = (BOARD / "pyrightconfig.json").read_text().replace('"stubs"', f'"{STUBS}"')
    (tmp_path / "pyrightconfig.json").write_text(config)
    result = run_pyright(tmp_path)
    assert result.returncode != 0 and "toggle_all" in result.stdout


@pytest.mark.parametrize("module", ["frame", "core"])
def test_the_shared_modules_import_on_cpython_too(module: str) -> None:
    __import__(f"hardware.board.{module}")
