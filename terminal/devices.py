"""The terminal's payment devices, chosen by configuration, and the loop that feeds them in.

Configuration (``terminal/config.py``):

=================  ============================================================================
``reader``         ``stdin`` | ``fifo:<path>`` | ``simulated`` | ``nfc:<nfcpy device>``
                   (:mod:`terminal.readers` owns this string)
``qr_scanner``     ``none`` | ``simulated`` | ``serial:<port>,<baud>,<eol>``
                   (``serial:/dev/ttyACM0,9600,cr``)
``ecny_gateway``   ``simulated`` | ``none`` | a real adapter registered in
                   :data:`shared.ecny_gateway.GATEWAYS` (none exists yet)
``camera``         ``""`` (no face pay) | ``file:PATH`` | ``simulated`` | ``opencv:N`` |
                   ``picamera2`` (:mod:`hardware.camera`); with a camera, the keypad key
                   :data:`FACE_KEY` ("A", labelled 刷脸 on the board) starts a face payment
=================  ============================================================================

:class:`DeviceLoop` reads each device on its own thread and hands what it gets to the
terminal: a tap from the reader (a card laid on it, SUN URL as credential, or a line of
text) → :meth:`Terminal.tap`; a scanned ``CQ1.…`` code → a QR payment; a scanned e-CNY
wallet payment code → the :class:`~terminal.ecny.EcnyCashier`; a product barcode → the
item and its price on the display (:mod:`terminal.scanned` tells them apart); anything else
→ "无法识别" on the display. Key **B** (冲正) starts an operator's reversal, run by
:class:`~terminal.reversal_desk.ReversalDesk`: while it runs, keys and cards go to it (the
operator's card, the diner's card that picks the sale); a ``reverse …`` line does the same
in one go. What a card pays for (a meal, or the cashier's basket) comes from
``order``; a line that is not a tap is reported as a ``bad_tap`` event; a device failure is
shown to the operator in Chinese and the loop goes on.

**Shop mode** (config ``mode``, or switched by an operator card): barcodes and keypad keys
build the cashier's basket, which the next payment pays for (:mod:`terminal.shop_flow`).
An **operator card** at a terminal with a keypad opens the operator's menu (totals, mode,
the day close: :mod:`terminal.operator_menu`, :mod:`terminal.day_close`).

**Above the no-PIN limit** (``max_sale_fen``, 小额免密) a card or QR sale needs the
cardholder's 6-digit payment PIN: with a keypad, :class:`PinPad` asks for it ("请输入支付密码",
each digit shown as ``*``), checks it with the server online
(:meth:`~terminal.server_http.ServerHttp.pin_check`) and hands the approval back to
:meth:`Terminal.tap`, which decides again with it. A wrong PIN shows the tries left; a
locked one "支付密码已锁定，请明日再试或联系管理员"; no answer from the server declines
the sale (``pin_offline``). The PIN goes only to the server: never to the journal, a log or
MQTT.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import IO, Any

from hardware.display import Screen
from hardware.keypad import Keypad, read_digits
from hardware.qr_scanner import QrScanner, SerialQrScanner, SimulatedQrScanner
from hardware.reader import CardReader
from hardware.serial_port import SerialSpec
from shared.ecny_gateway import GATEWAYS, EcnyGateway, make_gateway
from shared.errors import message
from shared.money import format_fen
from terminal.agent import PinEntry, PinOutcome
from terminal.authorize import PinApproval, TapRequest
from terminal.config import MODES, TerminalConfig
from terminal.day_close import DayClose
from terminal.ecny import EcnyCashier
from terminal.face_pay import FacePay
from terminal.operator_menu import OperatorMenu
from terminal.readers import (
    BadTap,
    CardReaderTapSource,
    Order,
    TapSource,
    make_card_reader,
    open_source,
    parse_reader,
)
from terminal.reversal_desk import ReversalDesk
from terminal.reversal_flow import START_KEY, ReversalLine
from terminal.scanned import classify, item_for_barcode
from terminal.server_http import ServerUnreachable
from terminal.shop_flow import ShopFlow

__all__ = ["DeviceLoop", "Order", "PinPad", "check_config", "make_card_reader", "make_qr_scanner"]

log = logging.getLogger(__name__)

FACE_KEY = "A"  # the keypad key that starts a face payment (刷脸)
PIN_PROMPT = "请输入支付密码"
PIN_LENGTH = 6


class PinPad:
    """Asks for the payment PIN on the keypad and checks it with the server (a
    :data:`~terminal.agent.PinEntry`). ``lock`` keeps other keypad readers away meanwhile."""

    def __init__(self, terminal: Any, keypad: Keypad, lock: threading.Lock, timeout_s: float = 30.0) -> None:
        self.terminal = terminal
        self.keypad = keypad
        self.lock = lock
        self.timeout_s = timeout_s

    def __call__(self, card_id: str, amount_fen: int) -> PinOutcome:
        display = self.terminal.display
        amount = f"金额 {format_fen(amount_fen)}"

        def masked(k: int) -> None:
            display.show(Screen((PIN_PROMPT, amount, "*" * k + "＿" * (PIN_LENGTH - k)), "info"))

        with self.lock:
            self.keypad.clear()
            masked(0)
            self.terminal.on_event({"event": "pin_prompt", "card_id": card_id, "amount_fen": amount_fen})
            pin = read_digits(self.keypad, PIN_LENGTH, self.timeout_s, on_progress=masked)
        if pin is None:  # cancelled (*) or no entry in time
            return PinOutcome(reason="pin_required", lines=("未输入支付密码，交易已取消",))
        try:
            answer = self.terminal.sync.http.pin_check(card_id, pin, amount_fen, self.terminal.clock.now_ms())
        except ServerUnreachable as exc:
            log.warning("PIN check for card %s: no answer (%s)", card_id, exc)
            return PinOutcome(reason="pin_offline")
        finally:
            del pin  # not kept beyond the call
        result = answer.get("result")
        log.info("PIN check for card %s, %d fen: %s", card_id, amount_fen, result)
        approval_id = answer.get("approval_id")
        if result == "ok" and isinstance(approval_id, str) and approval_id:
            return PinOutcome(approval=PinApproval(approval_id, card_id, amount_fen))
        if result == "wrong":
            left = answer.get("tries_left")
            tries = f"还可尝试{left}次" if isinstance(left, int) else ""
            return PinOutcome(reason="pin_wrong", lines=(message("pin_wrong"), tries))
        known = {
            "locked": "pin_locked",
            "not_set": "pin_not_set",
            "card_blocked": "card_blocked",
            "card_unknown": "card_unknown",
        }
        return PinOutcome(reason=known.get(str(result), "pin_offline"))


def make_qr_scanner(spec: str, on_error: Callable[[str], None]) -> QrScanner | None:
    if spec in ("", "none"):
        return None
    if spec == "simulated":
        return SimulatedQrScanner()
    if spec.startswith("serial:"):
        return SerialQrScanner(SerialSpec.parse(spec), on_error=on_error)
    raise ValueError(f"qr_scanner {spec!r}: expected none, simulated or serial:<port>,<baud>,<eol>")


def check_config(config: TerminalConfig) -> None:
    """ValueError if a device string names no known device — checked before anything opens."""
    parse_reader(config.reader)
    if config.qr_scanner.startswith("serial:"):
        SerialSpec.parse(config.qr_scanner)
    elif config.qr_scanner not in ("", "none", "simulated"):
        make_qr_scanner(config.qr_scanner, lambda m: None)  # raises
    if config.ecny_gateway not in ("", "none") and config.ecny_gateway not in GATEWAYS:
        raise ValueError(
            f"unknown digital RMB gateway {config.ecny_gateway!r} (known: {sorted(GATEWAYS)}, none)"
        )
    if config.mode not in MODES:
        raise ValueError(f"mode {config.mode!r}: one of {', '.join(MODES)}")


class DeviceLoop:
    def __init__(
        self,
        terminal: Any,  # terminal.agent.Terminal
        *,
        taps: TapSource | None = None,
        scanner: QrScanner | None = None,
        gateway: EcnyGateway | None = None,
        order: Callable[[], Order] = Order,
        keypad: Keypad | None = None,
        face_pay: FacePay | None = None,
        mode: str = "meal",
    ) -> None:
        self.terminal = terminal
        self.shop = ShopFlow(terminal, mode)  # the cashier's basket (inert in meal mode)
        self.day_close: DayClose | None = None  # opened by start()
        self.keypad = keypad
        self._keypad_lock = threading.Lock()  # one reader of the keypad at a time
        self.face_pay = face_pay
        self.taps = taps
        self.scanner = scanner
        self.cashier = EcnyCashier(terminal, gateway) if gateway is not None else None
        self.reversal = ReversalDesk(terminal, gateway)  # the operator's 冲正 (key B)
        self.order = self.shop.order if order is Order else order
        self.handled = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_config(
        cls,
        terminal: Any,
        config: TerminalConfig,
        order: Callable[[], Order] = Order,
        stdin: IO[str] | None = None,
    ) -> DeviceLoop:
        """The devices ``config`` names; ``stdin`` feeds a ``stdin`` reader."""
        loop = cls(terminal, order=order, mode=config.mode)
        loop.taps = open_source(
            config.reader,
            stdin,
            order=lambda: loop.order(),
            on_error=lambda m: loop.device_error("reader_error", m),
        )
        loop.scanner = make_qr_scanner(config.qr_scanner, lambda m: loop.device_error("scanner_error", m))
        gateway = make_gateway(config.ecny_gateway, terminal.clock)
        loop.cashier = EcnyCashier(terminal, gateway) if gateway is not None else None
        loop.reversal.gateway = gateway
        return loop

    @property
    def reader(self) -> CardReader | None:
        """The card reader device, when the taps come from one (``present()`` on a simulated one)."""
        return self.taps.reader if isinstance(self.taps, CardReaderTapSource) else None

    def start(self) -> DeviceLoop:
        if self.cashier is not None:
            self.cashier.recover()
        self.day_close = DayClose(self.terminal).start()  # sends closes still unsent
        self.reversal.recover()
        if self.taps is not None:
            self._spawn("reader", self._pump_taps)
        if self.scanner is not None:
            self._spawn("scanner", self._pump_scans)
        if self.keypad is not None:
            self._spawn("keypad", self._pump_keys)
        return self

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=f"device-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for device in (self.taps, self.scanner, self.cashier, self.face_pay):
            if device is not None:
                device.close()
        if self.day_close is not None:
            self.day_close.stop()

    def _pump_taps(self) -> None:
        assert self.taps is not None
        while not self._stop.is_set():
            try:
                request = self.taps.next(0.2)
            except BadTap as exc:
                log.warning("not a tap: %s", exc)
                self.terminal.on_event({"event": "bad_tap", "detail": str(exc)})
                continue
            if request is not None:
                self._handle(self.tap, request)

    def _pump_scans(self) -> None:
        assert self.scanner is not None
        while not self._stop.is_set():
            scan = self.scanner.read(0.2)
            if scan is not None:
                self._handle(self.on_scan, scan)

    def _pump_keys(self) -> None:
        """Keys pressed outside a payment: FACE_KEY starts one (with a camera); a reversal
        under way takes every key; in shop mode the others are the cashier's; otherwise they go
        to the reversal desk (B starts a reversal; at a shop counter the operator's menu does).
        While a face payment runs it reads the keypad itself (the card-number digits), on this
        same thread."""
        assert self.keypad is not None
        while not self._stop.is_set():
            with self._keypad_lock:  # not while a PIN is being typed
                key = self.keypad.read_key(0.2)
            if key == FACE_KEY and self.face_pay is not None and not self.reversal.active:
                self._handle(self.pay_by_face, key)
            elif key is not None and (self.reversal.active or not self.shop.active):
                self._handle(self.reversal.on_key, key)
            elif key is not None:
                self._handle(self.shop.key, key)

    def pin_entry(self) -> PinEntry | None:
        """Asking for the PIN needs a keypad; without one a sale above the limit is declined."""
        return None if self.keypad is None else PinPad(self.terminal, self.keypad, self._keypad_lock)

    def operator_menu(self) -> OperatorMenu | None:
        """The operator's menu needs a keypad (and a started loop: the day close)."""
        if self.keypad is None or self.day_close is None:
            return None
        return OperatorMenu(
            self.terminal,
            self.keypad,
            self._keypad_lock,
            self.shop,
            self.day_close,
            start_reversal=lambda: self.reversal.on_key(START_KEY),
        )

    def tap(self, request: TapRequest | ReversalLine) -> Any:
        """A card or QR payment: :meth:`Terminal.tap`, asking for the PIN when it is needed;
        while a reversal runs, the card goes to it; a ``reverse`` line is one; an operator
        card opens the operator's menu."""
        if isinstance(request, ReversalLine):
            return self.reversal.by_line(request)
        if self.reversal.active and request.card_id is not None:
            return self.reversal.on_card(request.card_id)
        result = self.terminal.tap(request, self.pin_entry())
        menu = self.operator_menu() if result[0].reason == "operator_card" else None
        if menu is not None:
            menu.run(request.card_id or "")
        return result

    def pay_by_face(self, _key: str = FACE_KEY) -> Any:
        assert self.face_pay is not None
        o = self.order()
        return self.face_pay.pay(
            TapRequest(None, method="face", kind=o.kind, items=o.items, amount_fen=o.amount_fen)
        )

    def _handle(self, handle: Callable[[Any], Any], event: Any) -> None:
        try:
            handle(event)
        except Exception:  # noqa: BLE001 — one bad event must not stop the device; the journal is safe
            log.exception("device loop: failed to handle %r", event)
            self.terminal.display.show(Screen(("系统繁忙，请重试",), "error"))
        self.shop.after_event()  # a paid basket is done
        self.handled += 1

    # --- what each device brings -----------------------------------------------------------

    def device_error(self, code: str, detail: str) -> None:
        log.error("%s: %s", code, detail)
        self.terminal.display.show(Screen((message(code, "zh"),), "error"))

    def on_scan(self, scan: Any) -> None:
        scanned = classify(scan.text)
        text = scanned.text
        if scanned.kind == "barcode":
            self.shop.scan(text) if self.shop.active else self.show_barcode(text)
            return
        o = self.order()
        if scanned.kind == "paycode":
            self.tap(
                TapRequest(
                    None, method="qr", kind=o.kind, items=o.items, amount_fen=o.amount_fen, credential=text
                )
            )
        elif scanned.kind == "ecny" and self.cashier is not None:
            self.cashier.pay_with_code(text, kind=o.kind, items=o.items, amount_fen=o.amount_fen)
        else:
            self.terminal.decline("qr", scanned.reason or "qr_invalid")

    def show_barcode(self, code: str) -> None:
        """A product barcode: the item and its price on the display (the basket comes later)."""
        item = item_for_barcode(self.terminal.rules()[0], code)
        if item is None:
            self.terminal.display.show(Screen((message("barcode_unknown", "zh"), code), "error"))
        else:
            self.terminal.display.show(Screen((item.name, format_fen(item.price_fen)), "info"))
