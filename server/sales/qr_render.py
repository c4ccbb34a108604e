"""Drawing QR codes (the one module that imports ``qrcode``): SVG for the phone page, a PNG
file and terminal-friendly text for the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import qrcode
import qrcode.image.svg


def _qr(text: str) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    qr.add_data(text)
    qr.make(fit=True)
    return qr


def svg(text: str) -> str:
    image = _qr(text).make_image(image_factory=qrcode.image.svg.SvgPathImage)
    return image.to_string(encoding="unicode")


def ascii_art(text: str) -> str:
    out = io.StringIO()
    _qr(text).print_ascii(out=out, invert=True)
    return out.getvalue()


def save_png(text: str, path: str | Path) -> Path:
    p = Path(path)
    _qr(text).make_image().save(p)
    return p
