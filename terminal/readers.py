"""Where taps come from, chosen by the terminal config's ``reader`` string — the one place
that string is read.

* ``stdin`` — one tap per line on standard input (the crash test, a developer at a
  keyboard, a simulator driving a terminal process);
* ``fifo:<path>`` — the same lines from a named pipe, reopened when a writer goes away;
* ``simulated`` — an in-process :class:`hardware.reader.SimulatedCardReader`, fed by code
  (``present(card_id)``: tests, ``simulator/``); a terminal process gets no taps from it;
* ``nfc:<device>`` — a real NFC reader (:class:`hardware.nfc.NfcCardReader`; ``nfc:usb``,
  ``nfc:tty:AMA0:pn532``, ``nfc:udp:localhost:54321`` for nfcpy's UDP test device).

A line is a card id (a meal), ``<card> shop <amount in fen>`` (an amount typed by the
cashier), ``<card> shop <sku>[*qty] ...`` (a basket), or a JSON object with the fields of
:class:`~terminal.authorize.TapRequest` — or an operator's reversal (冲正),
``reverse <operator card> <pin> [<sale seq>|last|card:<card>]``
(:class:`~terminal.reversal_flow.ReversalLine`, what the keypad flow decides on a terminal
without one). A malformed line raises :class:`BadTap`, which
the device loop reports and skips. A card laid on a reader (simulated or NFC) is paid for
the current :class:`Order` (a meal unless the cashier set up a basket); its SUN URL, if
any, travels as the request's ``credential`` to :mod:`terminal.identify`.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from hardware.reader import CardReader, SimulatedCardReader
from terminal.authorize import TapRequest
from terminal.reversal_flow import ReversalLine
from terminal.reversal_flow import parse_line as parse_reversal

# the tap line formats of the ``stdin`` and ``fifo:`` readers, one example each: the README's
# table and ``canteen-terminal run --help`` show these (tests parse every example)
LINE_FORMATS: tuple[tuple[str, str, str], ...] = (
    ("<card>", "C00001", "a meal on card C00001, at the canteen's price for the meal now"),
    ("<card> shop <fen>", "C00001 shop 350", "a shop sale of an amount the cashier typed: 350 fen = ¥3.50"),
    (
        "<card> shop <sku>[*qty] ...",
        "C00001 shop water tissue*2",
        "a shop basket at the shop's prices: 1 × water, 2 × tissue",
    ),
    (
        "reverse <operator> <pin> [<which>]",
        "reverse OP0001 246810 last",
        "the operator reverses (冲正) a sale of this terminal: <which> is last (the newest), a sale number, "
        "or card:<card>",
    ),
    (
        "{...}",
        '{"card_id": "C00001", "kind": "shop", "items": [["water", 1]]}',
        "a JSON object with fields card_id, method, kind, items, amount_fen, credential",
    ),
)


class BadTap(ValueError):
    """A line that is not a tap."""


@dataclass(frozen=True)
class Order:
    """What the next card laid on a reader pays for: a meal, or a shop basket / typed amount."""

    kind: str = "meal"
    items: tuple[tuple[str, int], ...] = ()
    amount_fen: int | None = None


class TapSource(Protocol):
    def next(self, timeout_s: float) -> TapRequest | ReversalLine | None:
        """The next tap, or None if none came within ``timeout_s`` (raises BadTap)."""
        ...

    def close(self) -> None: ...


_FIELDS = {"card_id", "method", "kind", "items", "amount_fen", "credential"}


def parse_line(line: str) -> TapRequest | ReversalLine | None:
    """A tap (or an operator's reversal) from one line of text; None for a blank line."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise BadTap(f"not JSON: {exc}") from exc
        if not isinstance(d, dict) or set(d) - _FIELDS:
            raise BadTap(f"unknown fields: {sorted(set(d) - _FIELDS) if isinstance(d, dict) else d!r}")
        try:
            items = tuple((str(sku), int(qty)) for sku, qty in d.get("items") or ())
        except (TypeError, ValueError) as exc:
            raise BadTap(f"items: {exc}") from exc
        amount = d.get("amount_fen")
        if amount is not None and (not isinstance(amount, int) or isinstance(amount, bool)):
            raise BadTap("amount_fen must be an integer number of fen")
        return TapRequest(
            card_id=d.get("card_id"),
            method=d.get("method", "card"),
            kind=d.get("kind", "meal"),
            items=items,
            amount_fen=amount,
            credential=d.get("credential"),
        )
    parts = text.split()
    if parts[0] == "reverse":
        try:
            return parse_reversal(parts[1:])
        except ValueError as exc:
            raise BadTap(str(exc)) from exc
    if len(parts) == 1:
        return TapRequest(parts[0])
    if parts[1] != "shop" or len(parts) < 3:
        raise BadTap(f"expected '<card> shop <fen>' or '<card> shop <sku>[*qty] ...': {text!r}")
    if len(parts) == 3 and parts[2].isdigit():
        return TapRequest(parts[0], kind="shop", amount_fen=int(parts[2]))
    items = []
    for word in parts[2:]:
        sku, _, qty = word.partition("*")
        if qty and not qty.isdigit():
            raise BadTap(f"bad quantity in {word!r}")
        items.append((sku, int(qty or 1)))
    return TapRequest(parts[0], kind="shop", items=tuple(items))


class LineTapSource:
    """Taps from a text stream, read on a background thread so ``next`` can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.eof = False
        self._thread = threading.Thread(target=self._pump, name="tap-lines", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stream:
            self._lines.put(line)
        self._lines.put(None)

    def next(self, timeout_s: float) -> TapRequest | ReversalLine | None:
        if self.eof:
            threading.Event().wait(timeout_s)
            return None
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if line is None:
            self.eof = True
            return None
        return parse_line(line)

    def close(self) -> None:
        return None


class FifoTapSource:
    """Taps from a named pipe; when the writer closes it, wait for the next writer."""

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            os.mkfifo(path)
        self.path = path
        self._source: LineTapSource | None = None

    def next(self, timeout_s: float) -> TapRequest | ReversalLine | None:
        if self._source is None or self._source.eof:
            # opening blocks until a writer appears: do it on the pump thread
            self._source = LineTapSource(_LazyOpen(self.path))
        return self._source.next(timeout_s)

    def close(self) -> None:
        return None


class _LazyOpen:
    """An iterable over the lines of ``path``, opened only when iterated."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self):  # noqa: ANN204
        with open(self.path, encoding="utf-8") as f:
            yield from f


class CardReaderTapSource:
    """A card reader: every card presented pays for the current order (a meal by default)."""

    def __init__(self, reader: CardReader, order: Callable[[], Order] = Order) -> None:
        self.reader = reader
        self.order = order  # asked at each tap: the cashier may change it between taps

    def next(self, timeout_s: float) -> TapRequest | None:
        tap = self.reader.read(timeout_s)
        if tap is None:
            return None
        o = self.order()
        return TapRequest(
            tap.card_id,
            method=tap.method,
            kind=o.kind,
            items=o.items,
            amount_fen=o.amount_fen,
            credential=tap.credential,
        )

    def close(self) -> None:
        self.reader.close()


KINDS = ("fifo", "nfc", "simulated", "stdin")


def parse_reader(spec: str) -> tuple[str, str]:
    """``(kind, argument)`` of a ``reader`` string; ValueError if it names no known reader."""
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown reader {spec!r}; known: stdin, fifo:<path>, simulated, nfc:<device>")
    if kind in ("fifo", "nfc") and not arg:
        raise ValueError(f"reader {kind} needs an argument: {kind}:<path or device>")
    return kind, arg


def make_card_reader(spec: str, on_error: Callable[[str], None]) -> CardReader:
    """The card reader device of a ``simulated`` or ``nfc:<device>`` reader string."""
    kind, arg = parse_reader(spec)
    if kind == "simulated":
        return SimulatedCardReader()
    if kind == "nfc":
        from hardware.nfc import NfcCardReader  # imports nfcpy only when a real reader is used

        return NfcCardReader(arg, on_error=on_error)
    raise ValueError(f"reader {spec!r} is not a card reader device (expected simulated or nfc:<device>)")


def open_source(
    spec: str,
    stdin: IO[str] | None = None,
    *,
    order: Callable[[], Order] = Order,
    on_error: Callable[[str], None] | None = None,
) -> TapSource:
    """The tap source named by a config ``reader`` string (``kind`` or ``kind:arg``).
    ``order`` prices what a card reader's taps pay for; ``on_error`` hears of device
    failures (an NFC reader that cannot be opened)."""
    kind, arg = parse_reader(spec)
    if kind == "stdin":
        if stdin is None:
            raise ValueError("reader stdin: this terminal has no standard input to read taps from")
        return LineTapSource(stdin)
    if kind == "fifo":
        return FifoTapSource(arg)
    return CardReaderTapSource(make_card_reader(spec, on_error or (lambda message: None)), order)
