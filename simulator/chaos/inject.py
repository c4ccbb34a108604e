"""Hostile and clumsy messages on the broker: copies, reorderings, forgeries, bit rot.

:class:`Injector` is an MQTT client of its own (through :class:`shared.mqtt.MqttLink`)
that listens on every terminal's sales and reversals (冲正) topics and keeps the real signed
batches it sees.
The chaos run then asks it to

* ``duplicate`` — publish a captured batch again, twice (what a broker's redelivery or a
  retrying terminal does);
* ``reorder`` — publish a run of captured batches newest first;
* ``forged`` — publish a plausible sale batch on a real terminal's topic signed with a key
  that is not the terminal's (``wrong_key``), or from a terminal nobody provisioned
  (``unknown_terminal``);
* ``corrupted`` — publish a captured batch with a few bytes flipped;
* ``compromised`` — a real terminal's key in a thief's hands: a batch of implausible sales
  (:func:`implausible_sale`) signed with the terminal's own secret and published on its
  own sales topic, numbered from :data:`COMPROMISED_SEQ_BASE` so they never take a
  sequence number the real terminal uses (its outbox and acks stay its own: it ignores the
  answers to sales it never journaled). Every such sale is remembered
  (:attr:`Injector.compromised`) and the batches sent again after the drain, as a thief
  would retry, so each one reaches the server whatever the broker did meanwhile.

What to pick is given as fractions from the plan (``pick``, ``where``), so the choice is
the seed's; which batches exist to pick from depends on the run. Every message it sends is
counted by kind in :attr:`Injector.sent`; the server must answer each copy ``duplicate``,
refuse each forgery and corruption with a reason code, applying nothing, and quarantine
each compromised sale.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

from shared.mqtt import BrokerAddress, MqttLink
from shared.protocol import SaleBatch, seal_hmac, topics
from shared.protocol.messages import Item, Sale

MAX_CAPTURED = 2_000
COMPROMISED_SEQ_BASE = 900_000_000  # far above any real terminal's numbers in a run
DAY_MS = 86_400_000


@dataclass(frozen=True)
class CompromisedSale:
    terminal_id: str
    seq: int
    uuid: str
    variant: str


def implausible_sale(
    variant: str,
    *,
    terminal_id: str,
    seq: int,
    canteen_id: str,
    card_id: str,
    other_unit_card: str,
    now_ms: int,
    max_sale_fen: int,
    meal_fen: int,
    item_fen: int,
    days_ahead: int,
) -> Sale:
    """A well-formed sale no honest terminal of the chaos world would make (``variant``):
    ``too_large`` ten times the per-sale limit; ``meal_price`` lunch at ``meal_fen`` (neither
    the staff nor the visitor price); ``item_price`` tissues at ``item_fen`` each (not the
    list price); ``future`` dated ``days_ahead`` days ahead; ``other_unit_card`` ten million
    fen offline on a card of another unit than the canteen's."""
    fields: dict[str, Any] = {"kind": "shop", "amount_fen": 500, "occurred_at_ms": now_ms, "card_id": card_id}
    if variant == "too_large":
        fields["amount_fen"] = 10 * max_sale_fen
    elif variant == "meal_price":
        fields.update(kind="meal", meal_period="lunch", amount_fen=meal_fen)
    elif variant == "item_price":
        fields.update(items=(Item("tissue", 2, item_fen),), amount_fen=2 * item_fen)
    elif variant == "future":
        fields["occurred_at_ms"] = now_ms + days_ahead * DAY_MS
    elif variant == "other_unit_card":
        fields.update(card_id=other_unit_card, amount_fen=10_000_000, offline=True)
    else:
        raise ValueError(f"unknown compromised variant {variant!r}")
    amount = fields["amount_fen"]
    return Sale(
        terminal_id=terminal_id,
        seq=seq,
        uuid=uuid.uuid4().hex,
        canteen_id=canteen_id,
        subsidy_fen=amount,
        **fields,
    )


class Injector:
    def __init__(self, broker_url: str, clock_ms: Any) -> None:
        self._lock = threading.Lock()
        self.captured: list[tuple[str, bytes]] = []
        self.sent: dict[str, int] = {}
        self.unsent: dict[str, int] = {}  # the broker was down: nothing went out
        self.compromised: list[CompromisedSale] = []  # every implausible sale signed with a real key
        self._compromised_batches: list[tuple[str, bytes]] = []
        self._clock_ms = clock_ms
        address, *alternates = BrokerAddress.parse_list(broker_url)  # a cluster: every node
        self.link = MqttLink(
            f"chaos-injector-{uuid.uuid4().hex[:6]}",
            address,
            alternates=alternates,
            subscriptions=[(topics.ALL_SALES, 1), (topics.ALL_REVERSALS, 1)],
            on_message=self._capture,
            backoff_max_s=1.0,
        )

    def start(self) -> Injector:
        self.link.start()
        self.link.wait_connected(10)
        return self

    def stop(self) -> None:
        self.link.stop()

    def _capture(self, topic: str, payload: bytes) -> None:
        with self._lock:
            if len(self.captured) < MAX_CAPTURED:
                self.captured.append((topic, payload))

    def _pick(self, fraction: float) -> tuple[str, bytes] | None:
        with self._lock:
            if not self.captured:
                return None
            return self.captured[min(int(fraction * len(self.captured)), len(self.captured) - 1)]

    def _send(self, kind: str, topic: str, payload: bytes) -> int:
        ok = self.link.publish(topic, payload)
        book = self.sent if ok else self.unsent
        book[kind] = book.get(kind, 0) + 1
        return int(ok)

    # --- the faults --------------------------------------------------------------------

    # each returns how many messages went out (0: nothing captured yet, or the broker is down)

    def duplicate(self, pick: float) -> int:
        got = self._pick(pick)
        return sum(self._send("duplicate", *got) for _ in range(2)) if got is not None else 0

    def reorder(self, pick: float, run: int) -> int:
        with self._lock:
            start = min(int(pick * len(self.captured)), max(len(self.captured) - run, 0))
            window = self.captured[start : start + run]
        return sum(self._send("reorder", topic, payload) for topic, payload in reversed(window))

    def forged(self, how: str, terminal_id: str, canteen_id: str, card_id: str, amount_fen: int) -> int:
        sender = terminal_id if how == "wrong_key" else f"X{uuid.uuid4().hex[:6]}"
        sale = Sale(
            terminal_id=sender,
            seq=10_000_000 + sum(self.sent.values()),
            uuid=uuid.uuid4().hex,
            card_id=card_id,
            canteen_id=canteen_id,
            amount_fen=amount_fen,
            occurred_at_ms=self._clock_ms(),
            kind="shop",
            subsidy_fen=amount_fen,
        )
        payload = seal_hmac(
            "sale_batch", sender, SaleBatch((sale,)).to_body(), b"not the terminal's key", self._clock_ms()
        )
        return self._send("forged", topics.sales(sender), payload)

    def compromised_batch(self, terminal_id: str, secret_hex: str, variants: list[str], **spec: Any) -> int:
        """Sign one batch of implausible sales (one per variant) with the terminal's own
        secret and publish it on its sales topic; remembered even when the broker is down."""
        with self._lock:
            first = COMPROMISED_SEQ_BASE + len(self.compromised) + 1
            sales = [
                implausible_sale(v, terminal_id=terminal_id, seq=first + i, now_ms=self._clock_ms(), **spec)
                for i, v in enumerate(variants)
            ]
            self.compromised += [
                CompromisedSale(terminal_id, s.seq, s.uuid, v) for s, v in zip(sales, variants, strict=True)
            ]
            payload = seal_hmac(
                "sale_batch",
                terminal_id,
                SaleBatch(tuple(sales)).to_body(),
                bytes.fromhex(secret_hex),
                self._clock_ms(),
            )
            self._compromised_batches.append((topics.sales(terminal_id), payload))
        return self._send("compromised", topics.sales(terminal_id), payload)

    def resend_compromised(self) -> int:
        """Publish every compromised batch again (the server answers copies ``duplicate``)."""
        with self._lock:
            batches = list(self._compromised_batches)
        return sum(self._send("compromised_retry", topic, payload) for topic, payload in batches)

    def corrupted(self, pick: float, where: float, flips: int) -> int:
        got = self._pick(pick)
        if got is None:
            return 0
        topic, payload = got
        data = bytearray(payload)
        for i in range(flips):
            pos = min(int(((where + i * 0.137) % 1.0) * len(data)), len(data) - 1)
            data[pos] ^= 0x01 << (i % 7)  # never a no-op
        return self._send("corrupted", topic, bytes(data))
