"""The framed serial protocol between the terminal and the peripheral board.

Frame: ``START(0xA5) | LEN | TYPE | PAYLOAD (LEN bytes) | CRC-16 (big-endian)``, with
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over LEN, TYPE and PAYLOAD. ``LEN`` ≤ 250.
:class:`Decoder` takes bytes as they arrive and returns whole, checked frames; a corrupted
frame is dropped (counted in ``errors``) and decoding resynchronises on the next START, so
one bad byte costs one frame, never the link. A frame cut short is dropped when the line
goes quiet (:meth:`Decoder.idle`), so it cannot swallow the frames after it.

Written once for both sides: MicroPython on the board and CPython on the terminal.
"""

try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython has no micropython module: const() is the identity

    def const(expr):  # type: ignore[no-redef]
        return expr


START = const(0xA5)
MAX_PAYLOAD = const(250)
OVERHEAD = const(5)  # START, LEN, TYPE, CRC hi, CRC lo

# terminal -> board (payload starts with a sequence byte the board acknowledges)
SHOW = const(0x01)  # seq, tone, UTF-8 lines joined by "\n"
BEEP = const(0x02)  # seq, tone
LED = const(0x03)  # seq, colour
PING = const(0x04)  # seq
# a firmware update, pushed by the terminal (core.Board, fwimage): the image's size and
# SHA-256 first, then its bytes in order, then a commit that the board checks before use
FW_BEGIN = const(0x05)  # seq, size (4 bytes, big-endian), sha256 (32 bytes), version (ASCII)
FW_CHUNK = const(0x06)  # seq, offset (4 bytes, big-endian), bytes
FW_COMMIT = const(0x07)  # seq
FW_CHUNK_BYTES = const(240)  # bytes per chunk: MAX_PAYLOAD less the seq and the offset
# board -> terminal
ACK = const(0x81)  # seq, status
KEY = const(0x82)  # one key: b"0".."9", b"*", b"#"
HELLO = const(0x83)  # firmware version, ASCII

TONE_INFO = const(0)
TONE_OK = const(1)
TONE_ERROR = const(2)
LED_OFF = const(0)
LED_GREEN = const(1)
LED_RED = const(2)
STATUS_OK = const(0)
STATUS_BAD = const(1)


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def encode(ftype: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload too long")
    body = bytes((len(payload), ftype)) + payload
    crc = crc16(body)
    return bytes((START,)) + body + bytes((crc >> 8, crc & 0xFF))


class Decoder:
    """Bytes in, ``(type, payload)`` frames out; resynchronises after corruption."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.errors = 0

    def reset(self) -> None:
        self._buf = bytearray()

    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def idle(self) -> list:
        """The line went quiet with a partial frame held: it was truncated and will never
        complete. Drop its START and decode whatever follows it."""
        frames = []
        while self._buf:
            self.errors += 1
            self._buf = self._buf[1:]
            frames.extend(self.feed(b""))
        return frames

    def feed(self, data: bytes) -> list:
        self._buf.extend(data)
        frames = []
        buf = self._buf
        i = 0
        n = len(buf)
        while i < n:
            if buf[i] != START:
                i += 1
                continue
            if n - i < 2:
                break
            length = buf[i + 1]
            if length > MAX_PAYLOAD:
                self.errors += 1
                i += 1
                continue
            end = i + length + OVERHEAD
            if end > n:
                break  # wait for the rest
            body = bytes(buf[i + 1 : end - 2])
            if crc16(body) == (buf[end - 2] << 8) | buf[end - 1]:
                frames.append((body[1], body[2:]))
                i = end
            else:
                self.errors += 1
                i += 1  # resynchronise on the next START
        self._buf = buf[i:]
        return frames
