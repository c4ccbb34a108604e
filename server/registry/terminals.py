"""Terminal provisioning, secrets and status (watermarks) on the server.

A terminal is provisioned for one canteen and receives its id and a 32-byte secret once;
the server keeps the secret to verify the terminal's HMAC signatures and to sign the acks
it sends back. Status heartbeats update ``watermark_ms`` — "this terminal has no unsent
sale before T" — which settlement and year-end clearing use to know they are complete.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from dataclasses import asdict, dataclass

from shared.errors import DomainError
from shared.protocol import Status


@dataclass(frozen=True)
class TerminalCredentials:
    terminal_id: str
    canteen_id: str
    secret_hex: str
    server_public_key: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def provision(
    conn: sqlite3.Connection,
    canteen_id: str,
    now_ms: int,
    server_public_key: str,
    terminal_id: str | None = None,
) -> TerminalCredentials:
    """Register a terminal for a canteen; call inside a write txn."""
    if conn.execute("SELECT 1 FROM canteens WHERE id = ?", (canteen_id,)).fetchone() is None:
        raise DomainError("unknown_canteen", canteen_id)
    if terminal_id is None:
        n = conn.execute("SELECT count(*) FROM terminals").fetchone()[0] + 1
        terminal_id = f"T{n:04d}"
        while conn.execute("SELECT 1 FROM terminals WHERE id = ?", (terminal_id,)).fetchone():
            n += 1
            terminal_id = f"T{n:04d}"
    elif conn.execute("SELECT 1 FROM terminals WHERE id = ?", (terminal_id,)).fetchone():
        raise DomainError("already_exists", f"terminal {terminal_id}")
    secret_hex = secrets.token_hex(32)
    conn.execute(
        "INSERT INTO terminals(id, canteen_id, secret_hex, created_at_ms) VALUES (?, ?, ?, ?)",
        (terminal_id, canteen_id, secret_hex, now_ms),
    )
    return TerminalCredentials(terminal_id, canteen_id, secret_hex, server_public_key)


class SecretBook:
    """Terminal secrets and canteens, cached; a miss re-reads the table (new terminals)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[bytes, str]] = {}

    def _load(self, terminal_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            hit = self._cache.get(terminal_id)
            if hit is not None:
                return hit
            row = self._conn.execute(
                "SELECT secret_hex, canteen_id FROM terminals WHERE id = ?", (terminal_id,)
            ).fetchone()
            if row is None:
                return None
            self._cache[terminal_id] = (bytes.fromhex(row[0]), row[1])
            return self._cache[terminal_id]

    def secret(self, terminal_id: str) -> bytes | None:
        hit = self._load(terminal_id)
        return hit[0] if hit else None

    def canteen(self, terminal_id: str) -> str | None:
        hit = self._load(terminal_id)
        return hit[1] if hit else None


def record_status(conn: sqlite3.Connection, terminal_id: str, status: Status, sent_at_ms: int) -> bool:
    """Store a heartbeat unless an newer one is already stored. The watermark only rises."""
    row = conn.execute(
        "SELECT last_status_ms, watermark_ms FROM terminals WHERE id = ?", (terminal_id,)
    ).fetchone()
    if row is None:
        return False
    if row[0] is not None and sent_at_ms < row[0]:
        return False
    watermark = row[1]
    if status.watermark_ms is not None and (watermark is None or status.watermark_ms > watermark):
        watermark = status.watermark_ms
    conn.execute(
        "UPDATE terminals SET last_status_json = ?, last_status_ms = ?, watermark_ms = ?, "
        "state = ? WHERE id = ?",
        (json.dumps(status.to_body()), sent_at_ms, watermark, status.state, terminal_id),
    )
    return True


def laggards(conn: sqlite3.Connection, cutoff_ms: int) -> list[dict[str, object]]:
    """Terminals whose watermark has not passed ``cutoff_ms``: they may still hold sales."""
    return [
        {"terminal_id": r[0], "canteen_id": r[1], "watermark_ms": r[2], "state": r[3]}
        for r in conn.execute(
            "SELECT id, canteen_id, watermark_ms, state FROM terminals "
            "WHERE watermark_ms IS NULL OR watermark_ms < ? ORDER BY id",
            (cutoff_ms,),
        )
    ]
