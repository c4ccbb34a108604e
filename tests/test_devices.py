"""Every payment method through its real device path, chosen by the terminal's config:
an NFC card on nfcpy's UDP device, QR and e-CNY codes through a serial scanner on a pty,
each ending as 支付成功 or a Chinese refusal on the display."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import replace

import pytest

from hardware.nfc import EmulatedCard, NfcCardReader
from hardware.ntag424 import SunKeys
from hardware.qr_scanner import SerialQrScanner, SimulatedQrScanner
from hardware.reader import SimulatedCardReader
from shared.clock import FakeClock
from shared.ecny_gateway import SimulatedGateway
from shared.paycode import make_code
from shared.protocol.messages import decode_changes
from simulator.waiting import wait_until
from terminal.devices import DeviceLoop, Order, make_card_reader, make_qr_scanner
from tests.ident_helpers import QR_SEED, offline_terminal
from tests.serial_support import raw_pty
from tests.test_nfc_reader import card_on_reader, free_udp_port

MASTER = bytes(range(32))
UID = bytes.fromhex("04A1B2C3D4E5F6")


@pytest.fixture
def pty_port() -> Iterator[tuple[int, str]]:
    with raw_pty() as pair:
        yield pair


def test_all_methods_through_real_devices_selected_by_config(tmp_path, clock: FakeClock, pty_port) -> None:  # noqa: ANN001
    master, pty_path = pty_port
    udp = free_udp_port()
    t = offline_terminal(
        tmp_path,
        clock,
        sun_master_key_hex=MASTER.hex(),
        reader=f"nfc:udp:localhost:{udp}",
        qr_scanner=f"serial:{pty_path},115200,crlf",
        ecny_gateway="simulated",
    )
    t.store.apply_changes(
        2,
        decode_changes(
            ({"kind": "card", "card_id": UID.hex().upper(), "holder_id": "H1", "status": "active"},)
        ),
    )
    order = [Order("shop", (("water", 1),))]
    loop = DeviceLoop.from_config(t, t.config, order=lambda: order[0])
    assert isinstance(loop.scanner, SerialQrScanner) and loop.cashier is not None
    gw: SimulatedGateway = loop.cashier.gateway  # type: ignore[assignment]
    gw.add_wallet("W1", 1000)
    loop.start()
    try:
        assert loop.scanner.ready.wait(30)
        reader = loop.reader
        assert isinstance(reader, NfcCardReader) and reader.ready.wait(30)
        # 1. NFC: an NTAG 424 card is laid on the reader (nfcpy's UDP device: a read is a few
        # ISO-DEP exchanges between two Python threads, slow on a loaded machine)
        with card_on_reader(EmulatedCard(udp, UID, sun=(SunKeys.from_master(MASTER), "https://c.example/c"))):
            assert wait_until(lambda: t.approved == 1, 30), (
                f"screen {t.display.last}, declined {t.declined}, reader errors {reader.errors} "
                f"({reader.last_error}), misreads {reader.misreads}"
            )
        # 2. the diner's phone QR code, through the serial scanner
        os.write(master, make_code(QR_SEED, "C1", 1, clock.now_ms()).encode() + b"\r\n")
        assert wait_until(lambda: t.approved == 2, 30)
        # 3. the same code again: refused
        os.write(master, make_code(QR_SEED, "C1", 1, clock.now_ms()).encode() + b"\r\n")
        assert wait_until(lambda: t.declined == 1, 30)
        assert t.display.last.lines[0] == "付款码已使用，请刷新后重试"
        # 4. a digital RMB wallet code, through the same scanner
        os.write(master, gw.payment_code("W1").encode() + b"\r\n")
        assert wait_until(lambda: t.approved == 3, 30)
        assert t.display.last.lines[0] == "支付成功"
        # 5. garbage
        os.write(master, b"hello world\r\n")
        assert wait_until(lambda: t.display.last.lines[0] == "无法识别：既不是付款码，也不是商品条码", 30)
    finally:
        loop.stop()
    methods = [r[0] for r in t.store.conn.execute("SELECT method FROM journal ORDER BY seq")]
    assert methods == ["card", "qr", "ecny"]
    t.store.close()


def test_simulated_devices_are_the_default(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, qr_scanner="simulated")
    loop = DeviceLoop.from_config(t, t.config)
    assert isinstance(loop.reader, SimulatedCardReader) and isinstance(loop.scanner, SimulatedQrScanner)
    loop.start()
    try:
        loop.reader.present("C1")
        assert wait_until(lambda: t.approved == 1, 30)
        loop.scanner.present(make_code(QR_SEED, "C1", 1, clock.now_ms()))
        assert wait_until(lambda: t.declined == 1, 30)  # one lunch per period
        assert t.display.last.lines[0] == "本餐次已就餐"
    finally:
        loop.stop()
    t.store.close()


def test_a_broken_reader_is_shown_to_the_operator_and_nothing_crashes(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, reader="nfc:tty:NOPE:pn532")
    loop = DeviceLoop.from_config(t, replace(t.config, ecny_gateway="none"))
    assert loop.cashier is None
    try:
        assert wait_until(
            lambda: t.display.last is not None and t.display.last.lines[0] == "读卡器故障，请联系管理员", 30
        )
    finally:
        loop.stop()
    t.store.close()


def test_offline_an_ecny_code_gets_the_chinese_offline_notice(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, online=False, qr_scanner="simulated", ecny_gateway="simulated")
    loop = DeviceLoop.from_config(t, t.config).start()
    try:
        loop.scanner.present("011234567890123456")
        assert wait_until(lambda: t.display.last is not None, 30)
        assert t.display.last.lines == ("数字人民币需联网使用", "当前网络离线", "请改用刷卡、扫码或刷脸支付")
    finally:
        loop.stop()
    t.store.close()


def test_unknown_reader_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        make_card_reader("bluetooth", lambda m: None)


def test_unknown_scanner_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        make_qr_scanner("usb-hid", lambda m: None)
    assert make_qr_scanner("none", lambda m: None) is None


def test_tap_lines_go_through_the_device_loop_and_a_bad_line_is_reported(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, reader="stdin", ecny_gateway="none")
    events: list[dict] = []
    t.on_event = events.append
    loop = DeviceLoop.from_config(t, t.config, stdin=io.StringIO("C1 lunch\nC1 shop water*2\n"))
    assert loop.reader is None  # lines, not a card reader device
    loop.start()
    try:
        assert wait_until(lambda: t.approved == 1, 30)
    finally:
        loop.stop()
    assert [e["event"] for e in events] == ["bad_tap", "approved"]
    assert events[1]["amount_fen"] == 400  # the line's own basket, not the loop's order
    t.store.close()


def test_a_stdin_reader_needs_a_standard_input(tmp_path, clock: FakeClock) -> None:  # noqa: ANN001
    t = offline_terminal(tmp_path, clock, reader="stdin")
    with pytest.raises(ValueError, match="stdin"):
        DeviceLoop.from_config(t, t.config)
    t.store.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reader", "bluetooth"),
        ("qr_scanner", "usb-hid"),
        ("qr_scanner", "serial:/dev/x,fast"),
        ("ecny_gateway", "acme-pay"),
        ("display", "hologram"),
    ],
)
def test_run_refuses_an_unknown_device_before_opening_anything(tmp_path, field: str, value: str) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from terminal.cli import main

    db = tmp_path / "terminal.sqlite"
    config = {
        "terminal_id": "T-x",
        "canteen_id": "C01",
        "secret_hex": "00" * 32,
        "server_public_key": "00" * 32,
        "broker_url": "mqtt://127.0.0.1:1",
        "server_url": "http://127.0.0.1:1",
        "db_path": str(db),
        field: value,
    }
    path = tmp_path / "terminal.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert value.split(",")[0] in result.output or value in result.output
    assert not db.exists()  # no terminal was started
