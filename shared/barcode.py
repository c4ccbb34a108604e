"""Product barcodes (商品条码): EAN-13, EAN-8 and UPC-A with the GS1 mod-10 check digit. Pure.

One definition for the server (which validates the barcodes a clerk gives a shop item) and
the terminal (which tells a scanned product barcode from a payment code).

* EAN-13 (13 digits) and EAN-8 (8 digits) are kept as they are;
* UPC-A (12 digits) is the EAN-13 with a leading ``0``: :func:`normalize` adds it, so the
  same product scanned as UPC-A or EAN-13 finds the same item.

The check digit (GS1 General Specifications 7.9.1): from the right, not counting the check
digit, digits are weighted 3, 1, 3, 1 …; the check digit brings the sum up to a multiple of 10.
"""

from __future__ import annotations

LENGTHS = (8, 12, 13)  # EAN-8, UPC-A, EAN-13


class BarcodeError(ValueError):
    """Not an EAN-13, EAN-8 or UPC-A barcode (wrong length, not digits, or a bad check digit)."""


def check_digit(body: str) -> int:
    """The GS1 check digit for ``body`` (the code without its last digit)."""
    if not body.isascii() or not body.isdigit():
        raise BarcodeError(f"{body!r}: digits only")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def with_check_digit(body: str) -> str:
    """``body`` with its check digit appended (7 → EAN-8, 11 → UPC-A, 12 → EAN-13)."""
    return body + str(check_digit(body))


def is_valid(code: str) -> bool:
    """Digits only, 8, 12 or 13 of them, and the last one the right check digit."""
    return (
        isinstance(code, str)
        and code.isascii()
        and code.isdigit()
        and len(code) in LENGTHS
        and check_digit(code[:-1]) == int(code[-1])
    )


def normalize(code: str) -> str:
    """The barcode as stored and looked up: EAN-13 or EAN-8, a UPC-A turned into its EAN-13.

    Surrounding spaces are ignored; anything that is not a valid barcode raises :class:`BarcodeError`."""
    text = code.strip() if isinstance(code, str) else ""
    if not text.isascii() or not text.isdigit() or len(text) not in LENGTHS:
        raise BarcodeError(f"{code!r}: a barcode is 8, 12 or 13 digits (EAN-8, UPC-A, EAN-13)")
    if not is_valid(text):
        raise BarcodeError(f"{code!r}: the check digit is wrong (expected {check_digit(text[:-1])})")
    return "0" + text if len(text) == 12 else text
