"""A firmware image: the board's module files in one byte string, as the terminal pushes it.

Format: ``CBFW1\\n``, then per file its name (plain, no folder), ``\\n``, its size in decimal,
``\\n`` and its bytes. The terminal packs it from a verified firmware bundle
(``terminal.updater``); the board unpacks it only after the whole image matched the SHA-256
announced before the first byte (:mod:`~hardware.board.core`). Written once for both sides:
MicroPython on the board and CPython on the terminal.
"""

MAGIC = b"CBFW1\n"
MAX_FILES = 64


def name_ok(name: str) -> bool:
    if not name or len(name) > 64 or name.startswith("."):
        return False
    for ch in name:
        if not (ch.isalpha() or ch.isdigit() or ch in "_.-"):
            return False
    return True


def pack(files: list) -> bytes:
    """``[(name, bytes), …]`` → image bytes."""
    out = [MAGIC]
    for name, data in files:
        if not name_ok(name):
            raise ValueError("file name not allowed: " + name)
        out.append(name.encode() + b"\n" + str(len(data)).encode() + b"\n")
        out.append(bytes(data))
    return b"".join(out)


def unpack(image: bytes) -> list | None:
    """Image bytes → ``[(name, bytes), …]``, or None if it is not a well-formed image."""
    if image[: len(MAGIC)] != MAGIC:
        return None
    files = []
    i = len(MAGIC)
    while i < len(image):
        if len(files) >= MAX_FILES:
            return None
        nl = image.find(b"\n", i)
        nl2 = image.find(b"\n", nl + 1) if nl >= 0 else -1
        if nl < 0 or nl2 < 0:
            return None
        try:
            name = image[i:nl].decode()
            size = int(image[nl + 1 : nl2])
        except (UnicodeError, ValueError):
            return None
        start = nl2 + 1
        if not name_ok(name) or size < 0 or start + size > len(image):
            return None
        files.append((name, image[start : start + size]))
        i = start + size
    return files
