"""Checking a scanned QR payment code at the terminal, offline.

:func:`check_code` is the rule — a pure function: the code must parse, its cardholder must
have a current credential, the signature must verify under that credential's public key,
the code must be fresh (≤ 60 s, see :mod:`shared.paycode`) and unseen here. :class:`QrVerifier`
is the thin I/O around it: it reads the cached credential (``qr_keys``, filled by the
``qr_key`` downstream change) and remembers accepted codes (``qr_seen``), so a code shown
twice at this terminal is refused locally. A code spent at two terminals is the server's to
catch (``server/double_spend.py``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from shared.paycode import VALIDITY_MS, PayCode, PaycodeError, is_fresh, parse_code, signature_ok
from shared.protocol.messages import QrKeyChange
from shared.sqlite_txn import write_txn

SEEN_RETENTION_MS = 10 * VALIDITY_MS  # older codes are refused by their time anyway


@dataclass(frozen=True)
class QrKey:
    holder_id: str
    public_key: str
    expires_at_ms: int
    offline_allowance_fen: int


@dataclass(frozen=True)
class QrAccepted:
    code: PayCode
    holder_id: str
    offline_allowance_fen: int


def check_code(
    code: PayCode, holder_id: str | None, key: QrKey | None, seen: bool, now_ms: int
) -> str | None:
    """None if the code may pay, else the decline reason."""
    if holder_id is None:
        return "card_unknown"
    if key is None or key.expires_at_ms <= now_ms:
        return "qr_no_credential"
    if not signature_ok(code, key.public_key):
        return "qr_invalid"
    if not is_fresh(code, now_ms):
        return "qr_expired"
    if seen:
        return "qr_reused"
    return None


# --- the cache -------------------------------------------------------------------------------


def apply_qr_key_change(conn: sqlite3.Connection, change: QrKeyChange) -> None:
    """Store a ``qr_key`` downstream change (call inside the store's delta transaction)."""
    conn.execute(
        "INSERT INTO qr_keys(holder_id, public_key, expires_at_ms, offline_allowance_fen) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(holder_id) DO UPDATE SET public_key = excluded.public_key, "
        "expires_at_ms = excluded.expires_at_ms, offline_allowance_fen = excluded.offline_allowance_fen",
        (change.holder_id, change.public_key, change.expires_at_ms, change.offline_allowance_fen),
    )


def clear_qr_keys(conn: sqlite3.Connection) -> None:
    """A snapshot replaces every credential."""
    conn.execute("DELETE FROM qr_keys")


class QrVerifier:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def key(self, holder_id: str) -> QrKey | None:
        row = self.conn.execute(
            "SELECT holder_id, public_key, expires_at_ms, offline_allowance_fen FROM qr_keys "
            "WHERE holder_id = ?",
            (holder_id,),
        ).fetchone()
        return QrKey(*row) if row else None

    def accept(self, text: str, now_ms: int) -> QrAccepted | str:
        """Verify a scanned code and, if good, remember it as used. Returns the accepted code
        or a decline reason. A code is used up by being accepted, whatever the sale's fate."""
        try:
            code = parse_code(text)
        except PaycodeError:
            return "qr_invalid"
        row = self.conn.execute("SELECT holder_id FROM cards WHERE card_id = ?", (code.card_id,)).fetchone()
        holder_id = row[0] if row else None
        key = self.key(holder_id) if holder_id else None
        seen = (
            key is not None
            and self.conn.execute(
                "SELECT 1 FROM qr_seen WHERE public_key = ? AND counter = ?", (key.public_key, code.counter)
            ).fetchone()
            is not None
        )
        reason = check_code(code, holder_id, key, seen, now_ms)
        if reason is not None:
            return reason
        assert key is not None and holder_id is not None
        with write_txn(self.conn):
            self.conn.execute(
                "INSERT INTO qr_seen(public_key, counter, code_time_ms, seen_at_ms) VALUES (?, ?, ?, ?)",
                (key.public_key, code.counter, code.time_ms, now_ms),
            )
            self.conn.execute("DELETE FROM qr_seen WHERE seen_at_ms < ?", (now_ms - SEEN_RETENTION_MS,))
        return QrAccepted(code, holder_id, key.offline_allowance_fen)
