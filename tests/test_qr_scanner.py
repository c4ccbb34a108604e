"""The serial QR scanner driver through real pyserial, on a pseudo-terminal pair."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from hardware.qr_scanner import SerialQrScanner, SimulatedQrScanner, split_lines
from hardware.serial_port import SerialError, SerialSpec, open_port
from tests.serial_support import raw_pty


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    with raw_pty() as pair:
        yield pair


def _read_all(scanner: SerialQrScanner, n: int) -> list[str]:
    out = []
    for _ in range(n):
        scan = scanner.read(5.0)
        assert scan is not None, f"only {out} arrived"
        out.append(scan.text)
    return out


@pytest.mark.parametrize("eol", ["cr", "lf", "crlf"])
def test_codes_arrive_whole_whatever_the_line_ending(pty_pair, eol: str) -> None:  # noqa: ANN001
    master, path = pty_pair
    spec = SerialSpec.parse(f"serial:{path},115200,{eol}")
    scanner = SerialQrScanner(spec)
    try:
        assert scanner.ready.wait(30)
        end = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}[eol]
        os.write(master, b"CQ1.C00001.1.17" + b"67672000.abc" + end + b"second")  # split mid-code
        os.write(master, b"-code" + end)
        assert _read_all(scanner, 2) == ["CQ1.C00001.1.1767672000.abc", "second-code"]
    finally:
        scanner.close()


def test_a_port_that_cannot_be_opened_is_reported_and_retried(pty_pair) -> None:  # noqa: ANN001
    master, path = pty_pair
    attempts: list[str] = []
    errors: list[str] = []

    def opener(spec: SerialSpec):  # noqa: ANN202
        attempts.append(spec.port)
        if len(attempts) < 3:
            raise SerialError("no such device")
        return open_port(SerialSpec(path, 9600, "cr"))

    scanner = SerialQrScanner(
        SerialSpec("/dev/ttyNOPE"), opener=opener, on_error=errors.append, reopen_s=0.01
    )
    try:
        assert scanner.ready.wait(30)
        os.write(master, b"hello\r")
        assert _read_all(scanner, 1) == ["hello"]
        assert len(errors) == 2 and "cannot open" in errors[0]
        assert scanner.last_error is None  # recovered
    finally:
        scanner.close()


def test_a_port_that_goes_away_is_reported_not_raised(pty_pair) -> None:  # noqa: ANN001
    master, path = pty_pair
    errors: list[str] = []
    failed = threading.Event()
    scanner = SerialQrScanner(
        SerialSpec(path), on_error=lambda m: (errors.append(m), failed.set()), reopen_s=0.05
    )
    try:
        assert scanner.ready.wait(30)
        os.write(master, b"one\r")
        assert _read_all(scanner, 1) == ["one"]
        os.close(master)  # the scanner is unplugged
        assert failed.wait(30)
        assert scanner.last_error is not None
    finally:
        scanner.close()


def test_noise_without_line_endings_is_discarded(pty_pair) -> None:  # noqa: ANN001
    master, path = pty_pair
    errors: list[str] = []
    scanner = SerialQrScanner(SerialSpec(path), on_error=errors.append)
    try:
        assert scanner.ready.wait(30)
        os.write(master, b"\x00" * 1500)
        os.write(master, b"\rok\r")
        assert _read_all(scanner, 1) == ["ok"]
        assert errors
    finally:
        scanner.close()


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("serial:/dev/ttyACM0,9600,cr", SerialSpec("/dev/ttyACM0", 9600, "cr")),
        ("serial:/dev/ttyUSB1", SerialSpec("/dev/ttyUSB1", 9600, "cr")),
        ("/dev/ttyS0,115200,CRLF", SerialSpec("/dev/ttyS0", 115200, "crlf")),
    ],
)
def test_serial_spec_parses(spec: str, expected: SerialSpec) -> None:
    assert SerialSpec.parse(spec) == expected


@pytest.mark.parametrize(
    "spec", ["serial:", "serial:/dev/x,fast", "serial:/dev/x,9600,tab", "serial:/dev/x,0", "serial:a,1,cr,x"]
)
def test_bad_serial_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        SerialSpec.parse(spec)


def test_split_lines_keeps_the_incomplete_rest() -> None:
    assert split_lines(b"a\rb\rc", b"\r") == ([b"a", b"b"], b"c")


def test_simulated_scanner_hands_over_codes() -> None:
    s = SimulatedQrScanner()
    s.present("x")
    assert s.read(1).text == "x"
    assert s.read(0.01) is None
