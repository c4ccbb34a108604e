"""Face encodings on the wire: 128 float32 values as one base64 string.

Canonical JSON allows no floats, so a face encoding (dlib's 128-d descriptor) travels as
the base64 of its 512 bytes, little-endian IEEE-754 float32. Pure standard library: the
server and the protocol need no numpy to check one; the terminal's matcher reads the same
bytes straight into a numpy matrix (``numpy.frombuffer(raw, "<f4")``).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence

from shared.protocol.codec import ProtocolError

DIMENSIONS = 128
RAW_BYTES = DIMENSIONS * 4
ENCODED_LEN = 684  # len(base64 of 512 bytes)
_FMT = f"<{DIMENSIONS}f"


def pack_encoding(values: Sequence[float]) -> bytes:
    """512 raw bytes of a 128-d encoding (float32, little-endian)."""
    if len(values) != DIMENSIONS:
        raise ProtocolError("bad_field", f"encoding: {len(values)} values, expected {DIMENSIONS}")
    return struct.pack(_FMT, *(float(v) for v in values))


def encoding_to_str(raw: bytes) -> str:
    check_raw(raw)
    return base64.b64encode(raw).decode("ascii")


def encoding_from_str(text: str) -> bytes:
    """The raw bytes of a wire encoding; refuses bad base64, a wrong size or NaN/inf."""
    if not isinstance(text, str) or len(text) != ENCODED_LEN:
        raise ProtocolError("bad_field", "encoding: expected a base64 string of 512 bytes")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("bad_field", "encoding: not base64") from exc
    check_raw(raw)
    return raw


def check_raw(raw: bytes) -> None:
    if len(raw) != RAW_BYTES:
        raise ProtocolError("bad_field", f"encoding: {len(raw)} bytes, expected {RAW_BYTES}")
    if not all(math.isfinite(v) for v in struct.unpack(_FMT, raw)):
        raise ProtocolError("bad_field", "encoding: not a finite vector")
