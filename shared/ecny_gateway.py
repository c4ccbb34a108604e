"""Digital RMB (数字人民币, e-CNY) payment gateways: the adapter interface and a simulated one.

Canteens take e-CNY through an acquiring gateway (the operating bank's merchant service).
Whatever the bank, the adapter offers the same small set of calls:

* :meth:`EcnyGateway.create_order` — an order for an amount, under our order number;
* :meth:`EcnyGateway.pay_customer_code` — the diner shows their wallet's payment code
  (付款码, "customer-presented"); the terminal scans it and charges it;
* :meth:`EcnyGateway.merchant_qr` — or the terminal shows a merchant QR code (收款码) that the
  diner's wallet app scans and pays; the terminal then polls :meth:`EcnyGateway.query`;
* the **result callback**: the gateway tells the server the order's result in a signed
  message (:class:`Notification`, :func:`sign_notification`, :meth:`EcnyGateway.verify_notification`);
* :meth:`EcnyGateway.refund` (idempotent per refund number) and :meth:`EcnyGateway.close_order`.

Every failure is a :class:`~shared.errors.DomainError`: ``ecny_unavailable`` (network; the
result of an order may then be unknown — ask :meth:`query` later), ``ecny_declined``,
``ecny_insufficient_funds``, ``ecny_refund_too_large``, ``invalid_input``.

:class:`SimulatedGateway` is the gateway used by tests and the demo: wallets with balances,
one-time payment codes, merchant QR payment by a simulated wallet app, refunds, signed
callbacks, and a switch that makes it unreachable. **No real gateway adapter exists in this
repository** (a bank's SDK and merchant credentials are needed); :func:`make_gateway` is where
one would be registered by name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from shared.clock import Clock
from shared.errors import DomainError

ORDER_STATES = frozenset({"created", "paid", "failed", "closed"})


@dataclass(frozen=True)
class GatewayOrder:
    order_no: str
    amount_fen: int
    status: str  # created | paid | failed | closed
    trade_no: str | None = None  # the gateway's own id for the payment
    paid_at_ms: int | None = None
    refunded_fen: int = 0
    fail_reason: str | None = None


@dataclass(frozen=True)
class Refund:
    refund_no: str
    order_no: str
    amount_fen: int
    at_ms: int


@dataclass(frozen=True)
class Notification:
    """The gateway's result callback for one order (integers only, as everywhere)."""

    order_no: str
    trade_no: str
    amount_fen: int
    status: str  # paid | refunded
    at_ms: int
    refunded_fen: int = 0

    def body(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_body(cls, body: bytes) -> Notification:
        try:
            d = json.loads(body)
            note = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (ValueError, TypeError, KeyError) as exc:
            raise DomainError("invalid_input", f"malformed gateway notification: {exc}") from exc
        ints = (note.amount_fen, note.at_ms, note.refunded_fen)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
            raise DomainError("invalid_input", "gateway notification amounts must be non-negative integers")
        if note.status not in ("paid", "refunded"):
            raise DomainError("invalid_input", f"gateway notification status {note.status!r}")
        return note


def sign_notification(merchant_key: bytes, body: bytes) -> str:
    return hmac.new(merchant_key, body, hashlib.sha256).hexdigest()


def verify_notification(merchant_key: bytes, body: bytes, signature: str) -> Notification:
    # compare_digest raises TypeError on a non-ASCII str: such a signature is simply wrong
    if not signature.isascii() or not hmac.compare_digest(sign_notification(merchant_key, body), signature):
        raise DomainError("bad_signature", "gateway notification signature")
    return Notification.from_body(body)


class EcnyGateway(Protocol):
    name: str

    def create_order(self, order_no: str, amount_fen: int, subject: str) -> GatewayOrder: ...

    def pay_customer_code(self, order_no: str, customer_code: str) -> GatewayOrder: ...

    def merchant_qr(self, order_no: str) -> str: ...

    def query(self, order_no: str) -> GatewayOrder: ...

    def close_order(self, order_no: str) -> GatewayOrder: ...

    def refund(self, order_no: str, refund_no: str, amount_fen: int) -> Refund: ...

    def verify_notification(self, body: bytes, signature: str) -> Notification: ...


@dataclass
class SimWallet:
    wallet_id: str
    balance_fen: int


class SimulatedGateway:
    """An in-memory e-CNY gateway with wallets, for tests and the demo."""

    name = "simulated"

    def __init__(
        self,
        clock: Clock,
        merchant_key: bytes | None = None,
        notify: Callable[[bytes, str], None] | None = None,
    ) -> None:
        self.clock = clock
        # the key its callbacks are signed with: the server's per-installation one (made at
        # init), else random — never a constant anyone could read in the source
        self.merchant_key = merchant_key if merchant_key is not None else secrets.token_bytes(32)
        self.notify = notify  # the result callback (in production: an HTTPS POST to the server)
        self.reachable = True
        self.wallets: dict[str, SimWallet] = {}
        self.orders: dict[str, GatewayOrder] = {}
        self.refunds: dict[str, Refund] = {}
        self._codes: dict[str, str] = {}  # one-time payment code -> wallet id
        self._payer: dict[str, str] = {}  # order -> wallet id
        self._qr: dict[str, str] = {}  # merchant QR text -> order
        self._lock = threading.Lock()

    # --- the simulated world -------------------------------------------------------------

    def add_wallet(self, wallet_id: str, balance_fen: int) -> SimWallet:
        self.wallets[wallet_id] = SimWallet(wallet_id, balance_fen)
        return self.wallets[wallet_id]

    def payment_code(self, wallet_id: str) -> str:
        """A fresh one-time payment code of the wallet (what the diner's app shows)."""
        code = "01" + "".join(secrets.choice("0123456789") for _ in range(16))
        self._codes[code] = wallet_id
        return code

    def wallet_pays_qr(self, qr_text: str, wallet_id: str) -> GatewayOrder:
        """The diner's wallet app scanned the merchant QR and confirmed."""
        self._up()
        with self._lock:
            order_no = self._qr.get(qr_text)
            if order_no is None:
                raise DomainError("ecny_declined", "unknown merchant QR code")
            order = self._charge(order_no, wallet_id)
        self._send(order, "paid")
        return order

    # --- the adapter interface -----------------------------------------------------------

    def _up(self) -> None:
        if not self.reachable:
            raise DomainError("ecny_unavailable", "simulated gateway unreachable")

    def create_order(self, order_no: str, amount_fen: int, subject: str) -> GatewayOrder:
        self._up()
        if not isinstance(amount_fen, int) or amount_fen <= 0:
            raise DomainError("invalid_input", "amount must be a positive number of fen")
        with self._lock:
            old = self.orders.get(order_no)
            if old is not None:
                if old.amount_fen != amount_fen:
                    raise DomainError("invalid_input", f"order {order_no} exists with another amount")
                return old
            self.orders[order_no] = GatewayOrder(order_no, amount_fen, "created")
            return self.orders[order_no]

    def pay_customer_code(self, order_no: str, customer_code: str) -> GatewayOrder:
        self._up()
        with self._lock:
            wallet_id = self._codes.pop(customer_code, None)
            if wallet_id is None:
                self._fail(order_no, "unknown or used payment code")
                raise DomainError("ecny_declined", "unknown or used payment code")
            order = self._charge(order_no, wallet_id)
        self._send(order, "paid")
        return order

    def merchant_qr(self, order_no: str) -> str:
        self._up()
        if order_no not in self.orders:
            raise DomainError("not_found", f"order {order_no}")
        text = f"https://ecny.simulated/pay?o={order_no}&t={secrets.token_hex(4)}"
        self._qr[text] = order_no
        return text

    def query(self, order_no: str) -> GatewayOrder:
        self._up()
        order = self.orders.get(order_no)
        if order is None:
            raise DomainError("not_found", f"order {order_no}")
        return order

    def close_order(self, order_no: str) -> GatewayOrder:
        self._up()
        with self._lock:
            order = self.query(order_no)
            if order.status == "created":
                order = self.orders[order_no] = replace(order, status="closed")
            return order

    def refund(self, order_no: str, refund_no: str, amount_fen: int) -> Refund:
        self._up()
        with self._lock:
            if refund_no in self.refunds:
                return self.refunds[refund_no]  # idempotent: the same refund again
            order = self.query(order_no)
            if order.status != "paid":
                raise DomainError("ecny_declined", f"order {order_no} is {order.status}, not paid")
            if amount_fen <= 0 or order.refunded_fen + amount_fen > order.amount_fen:
                raise DomainError("ecny_refund_too_large", f"{amount_fen} fen on {order_no}")
            order = self.orders[order_no] = replace(order, refunded_fen=order.refunded_fen + amount_fen)
            self.wallets[self._payer[order_no]].balance_fen += amount_fen
            refund = self.refunds[refund_no] = Refund(refund_no, order_no, amount_fen, self.clock.now_ms())
        self._send(order, "refunded")
        return refund

    def verify_notification(self, body: bytes, signature: str) -> Notification:
        return verify_notification(self.merchant_key, body, signature)

    # --- internals -----------------------------------------------------------------------

    def _fail(self, order_no: str, reason: str) -> None:
        order = self.orders.get(order_no)
        if order is not None and order.status == "created":
            self.orders[order_no] = replace(order, status="failed", fail_reason=reason)

    def _charge(self, order_no: str, wallet_id: str) -> GatewayOrder:
        order = self.orders.get(order_no)
        if order is None:
            raise DomainError("not_found", f"order {order_no}")
        if order.status == "paid":
            return order
        if order.status != "created":
            raise DomainError("ecny_declined", f"order {order_no} is {order.status}")
        wallet = self.wallets[wallet_id]
        if wallet.balance_fen < order.amount_fen:
            self._fail(order_no, "insufficient funds")
            raise DomainError("ecny_insufficient_funds", f"wallet {wallet_id}")
        wallet.balance_fen -= order.amount_fen
        self._payer[order_no] = wallet_id
        paid = replace(
            order,
            status="paid",
            trade_no="SIM" + secrets.token_hex(8).upper(),
            paid_at_ms=self.clock.now_ms(),
        )
        self.orders[order_no] = paid
        return paid

    def _send(self, order: GatewayOrder, status: str) -> None:
        if self.notify is None or order.trade_no is None:
            return
        note = Notification(
            order.order_no, order.trade_no, order.amount_fen, status, self.clock.now_ms(), order.refunded_fen
        )
        body = note.body()
        self.notify(body, sign_notification(self.merchant_key, body))


GATEWAYS: dict[str, Callable[[Clock], EcnyGateway]] = {"simulated": SimulatedGateway}


def make_gateway(name: str, clock: Clock) -> EcnyGateway | None:
    """The gateway named in configuration; ``none`` (or empty) means e-CNY is not offered."""
    if name in ("", "none"):
        return None
    factory = GATEWAYS.get(name)
    if factory is None:
        raise ValueError(f"unknown digital RMB gateway {name!r} (known: {sorted(GATEWAYS)}, none)")
    return factory(clock)
