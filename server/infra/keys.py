"""The server's Ed25519 key (signs deltas and snapshots), and other per-installation secrets
(the simulated e-CNY gateway's callback key), each kept in a 0600 file."""

from __future__ import annotations

import os
from pathlib import Path

from shared.private_files import ensure_private
from shared.protocol import ServerKey


def load_or_create_secret(path: str | Path, nbytes: int = 32) -> bytes:
    """A random secret kept hex-encoded in a 0600 file, made on first use."""
    p = Path(path)
    if p.exists():
        return bytes.fromhex(p.read_text().strip())
    p.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(nbytes)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return secret


def load_or_create(path: str | Path) -> ServerKey:
    p = Path(path)
    if p.exists():
        ensure_private(p)  # tighten a key file copied in with looser permissions
        return ServerKey.from_hex(p.read_text().strip())
    p.parent.mkdir(parents=True, exist_ok=True)
    key = ServerKey.generate()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.to_hex() + "\n")
    return key
