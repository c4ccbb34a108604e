"""Signed-in browsers: server-side sessions with an idle timeout.

The browser holds a random session id inside Flask's signed session cookie (HttpOnly,
SameSite=Lax, Secure over TLS: :mod:`server.web.site`); the server keeps only its SHA-256
with the account and the time it was last seen (``web_sessions``). A session unused for
:data:`IDLE_MS` ends: the next request finds it expired and deletes it. Logging out deletes
it at once; changing a password ends the account's other sessions.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from server.infra.db import write_txn
from server.web.accounts import Account, get_account

IDLE_MS = 30 * 60_000
# last_seen is written at most this often (a page view is not a write every time)
TOUCH_EVERY_MS = 30_000


def _hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def is_idle(last_seen_ms: int, now_ms: int) -> bool:
    return now_ms - last_seen_ms >= IDLE_MS


@dataclass(frozen=True)
class Resumed:
    account: Account | None
    expired: bool = False  # there was a session, and it ended for being idle


def start(conn: sqlite3.Connection, account_id: int, now_ms: int) -> str:
    """A new session for the account (call inside a write transaction); its id, once."""
    sid = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO web_sessions(id_hash, account_id, created_at_ms, last_seen_ms) VALUES (?, ?, ?, ?)",
        (_hash(sid), account_id, now_ms, now_ms),
    )
    return sid


def resume(conn: sqlite3.Connection, sid: str, now_ms: int) -> Resumed:
    """The account of a live session, touching it now and then; an idle one is ended and
    reported expired. Reads first and writes (its own short transaction) only when needed, so
    a page view does not queue behind the sales ingest for the write lock."""
    key = _hash(sid)
    row = conn.execute(
        "SELECT account_id, last_seen_ms FROM web_sessions WHERE id_hash = ?", (key,)
    ).fetchone()
    if row is None:
        return Resumed(None)
    if is_idle(row["last_seen_ms"], now_ms):
        with write_txn(conn):
            conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (key,))
        return Resumed(None, expired=True)
    account = get_account(conn, row["account_id"])
    if account is None:  # disabled since
        with write_txn(conn):
            conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (key,))
    elif now_ms - row["last_seen_ms"] >= TOUCH_EVERY_MS:
        with write_txn(conn):
            conn.execute("UPDATE web_sessions SET last_seen_ms = ? WHERE id_hash = ?", (now_ms, key))
    return Resumed(account)


def end(conn: sqlite3.Connection, sid: str) -> None:
    conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (_hash(sid),))


def end_others(conn: sqlite3.Connection, account_id: int, keep_sid: str | None) -> int:
    """End every session of the account but ``keep_sid`` (after a password change)."""
    keep = _hash(keep_sid) if keep_sid else ""
    return conn.execute(
        "DELETE FROM web_sessions WHERE account_id = ? AND id_hash <> ?", (account_id, keep)
    ).rowcount


def prune(conn: sqlite3.Connection, now_ms: int) -> int:
    """Delete every session idle for longer than the timeout."""
    return conn.execute("DELETE FROM web_sessions WHERE last_seen_ms <= ?", (now_ms - IDLE_MS,)).rowcount
