"""Enrolling a terminal with a one-time code instead of a file holding its secret.

``canteen-server provision-terminal CANTEEN`` :func:`issue`\\ s a code
(:mod:`shared.enrolment_code`: 16 typeable characters, only its hash is kept) that reserves
a terminal id for the canteen for 24 hours. On the Pi, ``canteen-terminal enrol --server URL
CODE`` sends it over HTTPS (``POST /api/v1/enrol``); :func:`redeem` then provisions the
terminal (a fresh secret, :func:`server.registry.terminals.provision`) and spends the code in
the same transaction, so a code gives out at most one secret.

A wrong code, a code used before, an expired or a cancelled one is refused with its own
stable code (``enrolment_code_invalid``/``_used``/``_expired``/``_cancelled``), and the API
logs each refusal. Wrong codes are counted per caller (:class:`WrongCodes`, in the server
process's memory: a refused request changes nothing in the database): after
:data:`MAX_FAILURES` within :data:`FAILURE_WINDOW_MS` the caller is refused
(``enrolment_rate_limited``) — even with a good code — until the window has passed.
Refusals are returned (:class:`Redemption`), not raised, so the caller logs them first.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from server.registry.terminals import (
    TerminalCredentials,
    new_terminal_id,
    provision,
    revoke,
)
from shared.enrolment_code import canonical, code_hash, display, new_code
from shared.errors import DomainError

CODE_TTL_MS = 24 * 3600 * 1000
FAILURE_WINDOW_MS = 15 * 60 * 1000
MAX_FAILURES = 5


@dataclass(frozen=True)
class IssuedCode:
    code: str  # as shown to a person: 7KQM-2XPA-9D4T-HW3R (never stored)
    terminal_id: str
    canteen_id: str
    expires_at_ms: int

    def to_json(self) -> dict[str, object]:
        return {
            "code": self.code,
            "terminal_id": self.terminal_id,
            "canteen_id": self.canteen_id,
            "expires_at_ms": self.expires_at_ms,
        }


@dataclass(frozen=True)
class Redemption:
    """What a code gave: the terminal's configuration, or the refusal's code and detail."""

    credentials: TerminalCredentials | None = None
    broker_url: str = ""
    server_url: str = ""
    refusal: str | None = None
    detail: str = ""
    terminal_id: str | None = None


def issue(
    conn: sqlite3.Connection,
    canteen_id: str,
    now_ms: int,
    *,
    broker_url: str,
    server_url: str = "",
    terminal_id: str | None = None,
    ttl_ms: int = CODE_TTL_MS,
    choice: Callable[[str], str] = secrets.choice,
) -> IssuedCode:
    """A one-time code for a new terminal of ``canteen_id`` (call inside a write txn).
    ``server_url`` empty: the terminal keeps the address it enrolled through."""
    terminal_id = new_terminal_id(conn, canteen_id, terminal_id)
    taken = conn.execute(  # a picked id is free in both already; a given one may not be
        "SELECT 1 FROM terminals WHERE id = ? UNION SELECT 1 FROM enrolments WHERE terminal_id = ?",
        (terminal_id, terminal_id),
    ).fetchone()
    if taken:
        raise DomainError("already_exists", f"terminal {terminal_id}")
    code = new_code(choice)
    conn.execute(
        "INSERT INTO enrolments(code_hash, terminal_id, canteen_id, broker_url, server_url, "
        "created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (code_hash(code), terminal_id, canteen_id, broker_url, server_url, now_ms, now_ms + ttl_ms),
    )
    return IssuedCode(display(code), terminal_id, canteen_id, now_ms + ttl_ms)


def rate_limited(failures_ms: list[int], now_ms: int) -> bool:
    """The rule: :data:`MAX_FAILURES` wrong codes within :data:`FAILURE_WINDOW_MS`."""
    return sum(1 for t in failures_ms if t > now_ms - FAILURE_WINDOW_MS) >= MAX_FAILURES


@dataclass
class WrongCodes:
    """Wrong codes per caller, recent ones only (one per server process, thread-safe)."""

    by_remote: dict[str, list[int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def limited(self, remote: str, now_ms: int) -> bool:
        with self._lock:
            return rate_limited(self.by_remote.get(remote, []), now_ms)

    def add(self, remote: str, now_ms: int) -> None:
        with self._lock:
            for key in [k for k, v in self.by_remote.items() if v[-1] <= now_ms - FAILURE_WINDOW_MS]:
                del self.by_remote[key]  # forget callers whose window has passed
            recent = [t for t in self.by_remote.get(remote, []) if t > now_ms - FAILURE_WINDOW_MS]
            self.by_remote[remote] = (recent + [now_ms])[-MAX_FAILURES:]


def redeem(
    conn: sqlite3.Connection,
    typed: str,
    remote: str,
    now_ms: int,
    server_public_key: str,
    wrong: WrongCodes,
) -> Redemption:
    """Spend a code (call inside a write txn); a refusal changes nothing but ``wrong``."""
    if wrong.limited(remote, now_ms):
        return Redemption(
            refusal="enrolment_rate_limited", detail=f"{MAX_FAILURES} wrong codes from {remote}"
        )
    code = canonical(typed)
    row = (
        conn.execute(
            "SELECT terminal_id, canteen_id, broker_url, server_url, expires_at_ms, used_at_ms, "
            "cancelled_at_ms FROM enrolments WHERE code_hash = ?",
            (code_hash(code),),
        ).fetchone()
        if code is not None
        else None
    )
    if row is None:
        wrong.add(remote, now_ms)
        return Redemption(refusal="enrolment_code_invalid", detail="no such code")
    terminal_id, canteen_id, broker_url, server_url, expires_at_ms, used_at_ms, cancelled_at_ms = row
    if cancelled_at_ms is not None:
        return Redemption(refusal="enrolment_code_cancelled", detail=terminal_id, terminal_id=terminal_id)
    if used_at_ms is not None:
        return Redemption(refusal="enrolment_code_used", detail=terminal_id, terminal_id=terminal_id)
    if now_ms >= expires_at_ms:
        return Redemption(refusal="enrolment_code_expired", detail=terminal_id, terminal_id=terminal_id)
    creds = provision(conn, canteen_id, now_ms, server_public_key, terminal_id)
    conn.execute(
        "UPDATE enrolments SET used_at_ms = ?, used_by = ? WHERE code_hash = ?",
        (now_ms, remote[:100], code_hash(code)),  # type: ignore[arg-type]
    )
    return Redemption(creds, broker_url, server_url, terminal_id=terminal_id)


def retire(conn: sqlite3.Connection, terminal_id: str, now_ms: int) -> str:
    """Take a terminal out of service (call inside a write txn): an enrolment code still
    waiting for it is cancelled, an enrolled terminal revoked. Returns what was done
    (``cancelled``, ``revoked`` or both joined by ``+``)."""
    done = []
    cur = conn.execute(
        "UPDATE enrolments SET cancelled_at_ms = ? WHERE terminal_id = ? AND used_at_ms IS NULL "
        "AND cancelled_at_ms IS NULL",
        (now_ms, terminal_id),
    )
    if cur.rowcount:
        done.append("cancelled")
    if conn.execute("SELECT 1 FROM terminals WHERE id = ?", (terminal_id,)).fetchone() is not None:
        revoke(conn, terminal_id, now_ms)
        done.append("revoked")
    if not done:
        raise DomainError("unknown_terminal", terminal_id)
    return "+".join(done)


def pending(conn: sqlite3.Connection, now_ms: int) -> list[dict[str, object]]:
    """Codes issued and not yet used, cancelled or expired (never the codes themselves)."""
    return [
        {"terminal_id": r[0], "canteen_id": r[1], "created_at_ms": r[2], "expires_at_ms": r[3]}
        for r in conn.execute(
            "SELECT terminal_id, canteen_id, created_at_ms, expires_at_ms FROM enrolments "
            "WHERE used_at_ms IS NULL AND cancelled_at_ms IS NULL AND expires_at_ms > ? ORDER BY terminal_id",
            (now_ms,),
        )
    ]
