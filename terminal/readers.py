"""Where taps come from, chosen by the terminal config's ``reader`` string.

* ``stdin`` — one tap per line on standard input (the simulator, the crash test, a
  developer at a keyboard);
* ``fifo:<path>`` — the same lines from a named pipe, reopened when a writer goes away;
* ``nfc:<device>`` — a real NFC reader: ``hardware.nfc.open_reader(device)`` must return a
  :class:`hardware.reader.CardReader`; each card presented becomes a meal tap (the driver
  and its module belong to the identification work, not to this package).

A line is a card id (a meal), ``<card> shop <amount in fen>`` (an amount typed by the
cashier), ``<card> shop <sku>[*qty] ...`` (a basket), or a JSON object with the fields of
:class:`~terminal.authorize.TapRequest`. A malformed line raises :class:`BadTap`, which
the run loop reports and skips.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import threading
from collections.abc import Callable
from typing import IO, Protocol

from hardware.reader import CardReader
from terminal.authorize import TapRequest


class BadTap(ValueError):
    """A line that is not a tap."""


class TapSource(Protocol):
    def next(self, timeout_s: float) -> TapRequest | None:
        """The next tap, or None if none came within ``timeout_s`` (raises BadTap)."""
        ...

    def close(self) -> None: ...


_FIELDS = {"card_id", "method", "kind", "items", "amount_fen", "credential"}


def parse_line(line: str) -> TapRequest | None:
    """A tap from one line of text; None for a blank line."""
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
            card_id=d.get("card_id"), method=d.get("method", "card"), kind=d.get("kind", "meal"),
            items=items, amount_fen=amount, credential=d.get("credential"),
        )
    parts = text.split()
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

    def next(self, timeout_s: float) -> TapRequest | None:
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

    def next(self, timeout_s: float) -> TapRequest | None:
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
    """A hardware card reader: every card presented is a meal tap."""

    def __init__(self, reader: CardReader) -> None:
        self.reader = reader

    def next(self, timeout_s: float) -> TapRequest | None:
        tap = self.reader.read(timeout_s)
        if tap is None:
            return None
        return TapRequest(tap.card_id, method=tap.method, credential=tap.credential)

    def close(self) -> None:
        self.reader.close()


def _nfc(device: str) -> TapSource:
    try:
        module = importlib.import_module("hardware.nfc")
    except ImportError as exc:
        raise ValueError(f"reader nfc:{device}: the NFC driver (hardware.nfc) is not installed: {exc}") from exc
    return CardReaderTapSource(module.open_reader(device))


OPENERS: dict[str, Callable[[str, IO[str]], TapSource]] = {
    "stdin": lambda arg, stdin: LineTapSource(stdin),
    "simulated": lambda arg, stdin: LineTapSource(stdin),  # the name older configs carry
    "fifo": lambda arg, stdin: FifoTapSource(arg),
    "nfc": lambda arg, stdin: _nfc(arg),
}


def open_source(spec: str, stdin: IO[str]) -> TapSource:
    """The tap source named by a config ``reader`` string (``kind`` or ``kind:arg``)."""
    kind, _, arg = spec.partition(":")
    opener = OPENERS.get(kind)
    if opener is None:
        raise ValueError(f"unknown reader {spec!r}; known: {', '.join(sorted(OPENERS))}")
    if kind in ("fifo", "nfc") and not arg:
        raise ValueError(f"reader {kind} needs an argument: {kind}:<path or device>")
    return opener(arg, stdin)
