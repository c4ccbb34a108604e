"""What the scanner read: a payment code, a product barcode, or neither. Pure.

The serial scanner reads the diner's phone and the goods on the counter alike, so every
scanned string is told apart before anything is done with it:

* ``paycode``: our dynamic QR payment code (:func:`shared.paycode.looks_like_code`, ``CQ1.…``);
* ``ecny``: a digital RMB wallet payment code (18–19 digits starting ``01``);
* ``barcode``: digits only with a valid GS1 check digit (EAN-13, EAN-8, UPC-A —
  :mod:`shared.barcode`), normalized so UPC-A finds its EAN-13;
* ``unrecognised``: anything else, refused with ``scan_unrecognised``.

The lengths do not overlap (8/12/13 digits against 18/19), so no string is two things.
:func:`item_for_barcode` then finds the canteen's item a barcode sells.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from shared.barcode import BarcodeError, is_valid, normalize
from shared.paycode import looks_like_code
from terminal.rules import CanteenRules, ShopItem

ECNY_CODE = re.compile(r"^01\d{16,17}$")  # wallet payment codes: 18–19 digits starting 01

ScanKind = Literal["paycode", "ecny", "barcode", "unrecognised"]


@dataclass(frozen=True)
class Scanned:
    kind: ScanKind
    text: str  # as read, stripped; for a barcode, normalized (EAN-13 / EAN-8)
    reason: str | None = None  # the error code when unrecognised


def classify(raw: str) -> Scanned:
    """Tell one scanned string apart (see the module's docstring)."""
    text = raw.strip()
    if looks_like_code(text):
        return Scanned("paycode", text)
    if ECNY_CODE.match(text):
        return Scanned("ecny", text)
    if is_valid(text):
        return Scanned("barcode", normalize(text))
    return Scanned("unrecognised", text, "scan_unrecognised")


def item_for_barcode(rules: CanteenRules, code: str) -> ShopItem | None:
    """The item of this canteen a scanned barcode sells (a UPC-A finds its EAN-13), or None."""
    try:
        return rules.items.get(rules.by_barcode.get(normalize(code), ""))
    except BarcodeError:
        return None
