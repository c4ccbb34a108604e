"""What the replay and the city drive the system with: the HTTP API with real tokens, and
terminals with their simulated devices.

* :class:`Api` — JSON over HTTP to the server's ``/api/v1`` with a bearer token; a refusal
  comes back as :class:`ApiRefusal` with the server's stable error code.
* :class:`Till` — one real terminal (:class:`~simulator.harness.cluster.TerminalHandle`) with its
  :class:`~terminal.devices.DeviceLoop`: a card is laid on the simulated reader, a phone's
  payment code is shown to the simulated scanner, and the answer is what the terminal tells
  its listeners (``approved`` / ``declined``) — exactly what the diner would see. At a shop
  counter the cashier scans barcodes and presses keys first (:meth:`Till.cashier`).
* :class:`Harness` — the cluster plus the waits a real deployment gets for free between
  two events of a story: every connected terminal has sent its sales, had them
  acknowledged and caught up with the server's deltas (``settle_down``); every connected
  terminal has reported a watermark past a cutoff (``wait_watermarks``, before a close).

Nothing here writes to the server's database; waiting reads it (the delta version and the
terminals' watermarks) the way a monitoring page would.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hardware.camera import SimulatedCamera
from hardware.face_engine import FaceEngine
from hardware.keypad import SimulatedKeypad
from server.downstream.deltas import current_version
from simulator.harness.cluster import Cluster, TerminalHandle
from simulator.waiting import wait_until
from terminal.authorize import TapRequest
from terminal.devices import DeviceLoop, Order
from terminal.face_pay import FacePay

PAY_TIMEOUT_S = 20.0


class ApiRefusal(Exception):
    """The server refused a request: its stable ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.status = status
        self.code = code
        self.detail = detail


class Api:
    """The server's HTTP API as one caller (one bearer token) sees it."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def as_(self, token: str) -> Api:
        return Api(self.base_url, token)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(
            self.base_url + path,
            method=method,
            data=payload,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": content_type,
                "Accept-Language": "en",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                err = json.loads(text)
            except ValueError:
                err = {"code": f"http_{exc.code}", "detail": text[:200].decode(errors="replace")}
            raise ApiRefusal(exc.code, str(err.get("code")), str(err.get("detail") or "")) from exc

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)


@dataclass
class Till:
    """A terminal at a canteen's counter with its devices."""

    handle: TerminalHandle
    loop: DeviceLoop
    canteen_id: str
    canteen_name: str
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    cut: bool = False
    camera: SimulatedCamera | None = None
    face_pay: FacePay | None = None
    _monitor: sqlite3.Connection | None = None
    _monitor_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.handle.id

    # --- looking at the terminal from outside (its own read connection; WAL readers do
    # not disturb the terminal's transactions) ------------------------------------------

    def _read(self, sql: str) -> Any:
        with self._monitor_lock:
            if self._monitor is None:
                self._monitor = sqlite3.connect(
                    f"file:{self.handle.config.db_path}?mode=ro",
                    uri=True,
                    check_same_thread=False,
                    timeout=30,
                )
            return self._monitor.execute(sql).fetchone()[0]

    def pending(self) -> int:
        """Sales and reversals (冲正) the server has not answered for good."""
        return int(
            self._read("SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM reversal_outbox)")
        )

    def oldest_pending_ms(self) -> int | None:
        return self._read("SELECT min(j.occurred_at_ms) FROM outbox o JOIN journal j ON j.seq = o.seq")

    def delta_version(self) -> int:
        return int(self._read("SELECT coalesce((SELECT value FROM meta WHERE key = 'delta_version'), 0)"))

    @property
    def in_sync(self) -> bool:
        return bool(self.handle.terminal.sync.in_sync)

    def present_card(self, card_id: str, order: Order, pin: str | None = None) -> dict[str, Any]:
        """Lay a card on the reader to pay for ``order`` (typing ``pin`` on the keypad if
        the terminal asks for it); the terminal's answer event."""
        reader = self.loop.reader
        assert reader is not None
        return self._pay(order, lambda: reader.present(card_id), pin)  # type: ignore[attr-defined]

    def show_code(self, code: str, order: Order, pin: str | None = None) -> dict[str, Any]:
        """Show a phone's payment code to the scanner; the terminal's answer event."""
        scanner = self.loop.scanner
        assert scanner is not None
        return self._pay(order, lambda: scanner.present(code), pin)  # type: ignore[attr-defined]

    def show_face(self, label: str, order: Order) -> dict[str, Any]:
        """A diner (simulated person ``label``) looks into the camera to pay for ``order``."""
        assert self.camera is not None and self.face_pay is not None
        camera, face_pay = self.camera, self.face_pay

        def look() -> None:
            camera.present(label)
            try:
                face_pay.pay(
                    TapRequest(
                        None, method="face", kind=order.kind, items=order.items, amount_fen=order.amount_fen
                    )
                )
            finally:
                camera.present(None)

        return self._pay(order, look)

    # --- the cashier in shop mode ------------------------------------------------------

    CASHIER_KEYS = {"type": "{}#", "qty": "{}B", "void": "C", "clear": "*"}

    def cashier(self, steps: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
        """The cashier builds the basket: ``("scan", barcode)`` on the scanner, the others
        on the keypad (``type`` an item code, ``qty``, ``void``, ``clear``; see
        :mod:`terminal.shop_flow`), the till switched to shop mode first. Returns the
        terminal's answer to each step (``basket`` or ``basket_refused``)."""
        shop, scanner, keypad = self.loop.shop, self.loop.scanner, self.loop.keypad
        assert scanner is not None and isinstance(keypad, SimulatedKeypad)
        if not shop.active:
            shop.set_mode("shop")
        self.loop.order = shop.order  # the next payment pays for the basket
        answers = []
        for step, arg in steps:
            self._forget_events()
            if step == "scan":
                scanner.present(arg)  # type: ignore[attr-defined]
            else:
                keypad.press(self.CASHIER_KEYS[step].format(arg))
            answer = self._answer(("basket", "basket_refused"))
            if answer.get("action") == "clear_armed":  # '*' once more clears the basket
                keypad.press("*")
                answer = self._answer(("basket", "basket_refused"))
            answers.append(answer)
        return answers

    def pay_basket(
        self, card_id: str | None, code: str | None = None, pin: str | None = None
    ) -> dict[str, Any]:
        """The diner pays for the cashier's basket: a card on the reader, or ``code`` shown
        to the scanner; the terminal's answer event."""
        if code is not None:
            scanner = self.loop.scanner
            assert scanner is not None
            return self._pay(None, lambda: scanner.present(code), pin)  # type: ignore[attr-defined]
        reader = self.loop.reader
        assert reader is not None
        return self._pay(None, lambda: reader.present(card_id), pin)  # type: ignore[attr-defined]

    def sale_items(self, seq: int) -> list[list[Any]]:
        """A journaled sale's items as ``[sku, qty, unit price, reference price]``."""
        raw = self._read(f"SELECT sale_json FROM journal WHERE seq = {int(seq)}")
        return [
            [i["sku"], i["qty"], i["unit_price_fen"], i.get("reference_price_fen")]
            for i in json.loads(raw)["items"]
        ]

    def _forget_events(self) -> None:
        """Drop the events from before (link changes and the like)."""
        while not self.events.empty():
            self.events.get_nowait()

    def _events(self) -> Iterator[dict[str, Any]]:
        """The terminal's events as they come, for :data:`PAY_TIMEOUT_S` from the first."""
        deadline = time.monotonic() + PAY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                yield self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return

    def _answer(self, kinds: tuple[str, ...]) -> dict[str, Any]:
        for event in self._events():
            if event.get("event") in kinds:
                return event
        raise RuntimeError(f"terminal {self.id} gave no answer within {PAY_TIMEOUT_S} s")

    def _pay(self, order: Order | None, act: Callable[[], None], pin: str | None = None) -> dict[str, Any]:
        self._forget_events()
        if order is not None:  # None: what the till is set to pay for (the cashier's basket)
            self.loop.order = lambda: order
        act()
        for event in self._events():
            if event.get("event") == "pin_prompt":  # the diner types the PIN, or cancels (*)
                keypad = self.loop.keypad
                assert isinstance(keypad, SimulatedKeypad)
                keypad.press(pin if pin is not None else "*")
            if event.get("event") in ("approved", "declined"):
                return event
        raise RuntimeError(f"terminal {self.id} gave no answer within {PAY_TIMEOUT_S} s")

    def reverse(self, operator: str, pin: str, card: str | None = None) -> dict[str, Any]:
        """The operator reverses a sale (冲正) on the keypad, as at a real counter: key B,
        the operator card on the reader, the PIN, the sale — the diner's ``card`` laid on
        the reader, or the newest one on the display (key 1) — and # to confirm. The
        terminal's answer event: ``reversed``, or ``reversal_declined`` with the reason."""
        keypad, reader = self.loop.keypad, self.loop.reader
        assert isinstance(keypad, SimulatedKeypad) and reader is not None
        self._forget_events()
        keypad.press("B")
        why, card_laid = None, False
        for event in self._events():
            kind, stage = event.get("event"), event.get("stage")
            if kind == "reversal_prompt" and event.get("reason"):  # that card has nothing: give up
                why = event["reason"]
                keypad.press("*")
            elif kind == "reversal_prompt" and stage == "operator":
                reader.present(operator)  # type: ignore[attr-defined]
            elif kind == "reversal_prompt" and stage == "pin":
                keypad.press(pin)
            elif kind == "reversal_prompt" and stage == "choose":
                if card is not None and not card_laid:  # the diner's card picks their sales
                    reader.present(card)  # type: ignore[attr-defined]
                    card_laid = True
                else:  # the newest on the display
                    keypad.press("1")
            elif kind == "reversal_prompt" and stage == "confirm":
                keypad.press("#")
            elif kind == "reversed":
                return event
            elif kind == "reversal_declined":
                return {**event, "reason": why or event["reason"]}
        raise RuntimeError(f"terminal {self.id} ended no reversal within {PAY_TIMEOUT_S} s")

    def stop(self) -> None:
        self.loop.stop()
        if self.face_pay is not None:
            self.face_pay.close()
        if self._monitor is not None:
            self._monitor.close()


class Harness:
    """A :class:`Cluster` with tills and the API; see the module docstring."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        assert cluster.server is not None
        self.admin = Api(cluster.server.base_url, cluster.admin_token())
        self.tills: list[Till] = []
        self._db = cluster.db()

    def close(self) -> None:
        for t in self.tills:
            t.stop()
        self._db.close()

    def token(self, role: str, **scope: str) -> Api:
        """An API caller with a fresh token of ``role`` (clerk: unit_id, diner: holder_id …)."""
        issued = self.admin.post("/api/v1/tokens", {"role": role, "label": "simulator", **scope})
        return self.admin.as_(issued["token"])

    def add_till(
        self, canteen_id: str, canteen_name: str, face_engine: FaceEngine | None = None, **overrides: Any
    ) -> Till:
        """A terminal with a simulated card reader and QR scanner (and, given a face engine,
        a simulated camera for face pay)."""
        settings = {"qr_scanner": "simulated", "ecny_gateway": "none", "heartbeat_s": 0.25, **overrides}
        handle = self.cluster.add_terminal(canteen_id, **settings)
        till = Till(handle, DeviceLoop.from_config(handle.terminal, handle.config), canteen_id, canteen_name)
        till.loop.keypad = SimulatedKeypad()  # the diner's keypad: the payment PIN above the no-PIN limit
        if face_engine is not None:
            till.camera = SimulatedCamera()
            till.face_pay = FacePay(handle.terminal, till.camera, face_engine)
        handle.terminal.on_event = till.events.put  # the terminal's listener hook: what the diner is told
        till.loop.start()
        self.tills.append(till)
        return till

    # --- the network -------------------------------------------------------------------

    def cut(self, till: Till, timeout_s: float = 20.0) -> None:
        """Cut a till's network and wait until it knows it is offline."""
        till.cut = True
        till.handle.cut()
        if not wait_until(lambda: not till.handle.terminal.sync.online, timeout_s, interval_s=0.01):
            raise RuntimeError(f"terminal {till.id} did not notice its network was cut")

    def oneway(self, till: Till) -> None:
        """Lose a till's return path: its sales reach the server, nothing comes back. The
        terminal cannot tell (it still thinks it is online); the harness stops waiting for it."""
        till.cut = True
        till.handle.mqtt_proxy.oneway()

    def heal(self, till: Till) -> None:
        till.cut = False
        till.handle.heal()

    # --- waiting for a quiet system ----------------------------------------------------

    def server_version(self) -> int:
        return current_version(self._db)

    def settle_down(self, timeout_s: float = 60.0) -> None:
        """Every connected till online, its outbox empty, its cache at the server's version."""

        def quiet() -> bool:
            version = self.server_version()
            for t in self.tills:
                if not t.cut and (not t.in_sync or t.pending() or t.delta_version() < version):
                    return False
            return True

        if not wait_until(quiet, timeout_s, interval_s=0.01):
            behind = [t.id for t in self.tills if not t.cut and (not t.in_sync or t.pending())]
            raise RuntimeError(f"terminals did not settle within {timeout_s:.0f} s: {behind}")

    def wait_acknowledged(self, before_ms: int, timeout_s: float = 60.0) -> None:
        """Every connected till's sales made before ``before_ms`` are acknowledged."""

        def done() -> bool:
            for t in self.tills:
                if not t.cut:
                    oldest = t.oldest_pending_ms()
                    if oldest is not None and oldest < before_ms:
                        return False
            return True

        if not wait_until(done, timeout_s, interval_s=0.002):
            raise RuntimeError(f"sales before {before_ms} not acknowledged within {timeout_s:.0f} s")

    def wait_watermarks(self, cutoff_ms: int, timeout_s: float = 30.0) -> None:
        """Every connected till has told the server "nothing unsent before ``cutoff_ms``"."""
        ids = [t.id for t in self.tills if not t.cut]

        def past() -> bool:
            if not ids:
                return True
            marks = dict(
                self._db.execute(
                    f"SELECT id, watermark_ms FROM terminals WHERE id IN ({','.join('?' * len(ids))})", ids
                ).fetchall()
            )
            return all((marks.get(i) or 0) >= cutoff_ms for i in ids)

        if not wait_until(past, timeout_s, interval_s=0.01):
            raise RuntimeError(f"terminals did not report past {cutoff_ms} within {timeout_s:.0f} s")
