"""The terminal's payment devices, chosen by configuration, and the loop that feeds them in.

Configuration (``terminal/config.py``):

=================  ============================================================================
``reader``         ``simulated`` | ``nfc:<nfcpy device>`` (``nfc:usb``, ``nfc:tty:AMA0:pn532``,
                   ``nfc:udp:localhost:54321`` for nfcpy's UDP test device)
``qr_scanner``     ``none`` | ``simulated`` | ``serial:<port>,<baud>,<eol>``
                   (``serial:/dev/ttyACM0,9600,cr``)
``ecny_gateway``   ``simulated`` | ``none`` | a real adapter registered in
                   :data:`shared.ecny_gateway.GATEWAYS` (none exists yet)
=================  ============================================================================

:class:`DeviceLoop` reads each device on its own thread and hands what it gets to the
terminal: a card tap → :meth:`Terminal.tap` (``method="card"``, SUN URL as credential); a
scanned ``CQ1.…`` code → a QR payment; a scanned e-CNY wallet payment code → the
:class:`~terminal.ecny.EcnyCashier`; anything else → "付款码无效" on the display. What is
being sold (a meal, or the cashier's basket) comes from ``order``; a device failure is shown
to the operator in Chinese and the loop goes on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hardware.display import Screen
from hardware.qr_scanner import QrScanner, SerialQrScanner, SimulatedQrScanner
from hardware.reader import CardReader, SimulatedCardReader
from hardware.serial_port import SerialSpec
from shared.ecny_gateway import EcnyGateway, make_gateway
from shared.errors import message
from shared.paycode import looks_like_code
from terminal.authorize import TapRequest
from terminal.config import TerminalConfig
from terminal.ecny import EcnyCashier

log = logging.getLogger(__name__)

ECNY_CODE = re.compile(r"^01\d{16,17}$")  # wallet payment codes: 18–19 digits starting 01


@dataclass(frozen=True)
class Order:
    """What the next payment is for: a meal, or a shop basket / typed amount."""

    kind: str = "meal"
    items: tuple[tuple[str, int], ...] = ()
    amount_fen: int | None = None


def make_card_reader(spec: str, on_error: Callable[[str], None]) -> CardReader:
    if spec == "simulated":
        return SimulatedCardReader()
    if spec.startswith("nfc:"):
        from hardware.nfc import NfcCardReader  # imports nfcpy only when a real reader is used

        return NfcCardReader(spec.removeprefix("nfc:"), on_error=on_error)
    raise ValueError(f"reader {spec!r}: expected simulated or nfc:<device>")


def make_qr_scanner(spec: str, on_error: Callable[[str], None]) -> QrScanner | None:
    if spec in ("", "none"):
        return None
    if spec == "simulated":
        return SimulatedQrScanner()
    if spec.startswith("serial:"):
        return SerialQrScanner(SerialSpec.parse(spec), on_error=on_error)
    raise ValueError(f"qr_scanner {spec!r}: expected none, simulated or serial:<port>,<baud>,<eol>")


class DeviceLoop:
    def __init__(
        self,
        terminal: Any,  # terminal.agent.Terminal
        *,
        reader: CardReader | None = None,
        scanner: QrScanner | None = None,
        gateway: EcnyGateway | None = None,
        order: Callable[[], Order] = Order,
    ) -> None:
        self.terminal = terminal
        self.reader = reader
        self.scanner = scanner
        self.cashier = EcnyCashier(terminal, gateway) if gateway is not None else None
        self.order = order
        self.handled = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_config(cls, terminal: Any, config: TerminalConfig, order: Callable[[], Order] = Order) -> DeviceLoop:
        loop = cls(terminal, order=order)
        loop.reader = make_card_reader(config.reader, lambda m: loop.device_error("reader_error", m))
        loop.scanner = make_qr_scanner(config.qr_scanner, lambda m: loop.device_error("scanner_error", m))
        gateway = make_gateway(config.ecny_gateway, terminal.clock)
        loop.cashier = EcnyCashier(terminal, gateway) if gateway is not None else None
        return loop

    def start(self) -> DeviceLoop:
        if self.cashier is not None:
            self.cashier.recover()
        for name, device, handle in (("reader", self.reader, self.on_tap), ("scanner", self.scanner, self.on_scan)):
            if device is not None:
                t = threading.Thread(target=self._pump, args=(device, handle), name=f"device-{name}", daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for device in (self.reader, self.scanner):
            if device is not None:
                device.close()

    def _pump(self, device: Any, handle: Callable[[Any], None]) -> None:
        while not self._stop.is_set():
            event = device.read(0.2)
            if event is None:
                continue
            try:
                handle(event)
            except Exception:  # noqa: BLE001 — one bad event must not stop the device; the journal is safe
                log.exception("device loop: failed to handle %r", event)
                self.terminal.display.show(Screen(("系统繁忙，请重试",), "error"))
            self.handled += 1

    # --- what each device brings -----------------------------------------------------------

    def device_error(self, code: str, detail: str) -> None:
        log.error("%s: %s", code, detail)
        self.terminal.display.show(Screen((message(code, "zh"),), "error"))

    def on_tap(self, tap: Any) -> None:
        o = self.order()
        self.terminal.tap(TapRequest(tap.card_id, method=tap.method, kind=o.kind, items=o.items,
                                     amount_fen=o.amount_fen, credential=tap.credential))

    def on_scan(self, scan: Any) -> None:
        o = self.order()
        text = scan.text.strip()
        if looks_like_code(text):
            self.terminal.tap(TapRequest(None, method="qr", kind=o.kind, items=o.items, amount_fen=o.amount_fen, credential=text))
        elif ECNY_CODE.match(text) and self.cashier is not None:
            self.cashier.pay_with_code(text, kind=o.kind, items=o.items, amount_fen=o.amount_fen)
        else:
            self.terminal.decline("qr", "qr_invalid")
