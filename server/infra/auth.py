"""Who may call what: bearer tokens with a role, and terminal request signatures.

People use ``Authorization: Bearer <token>``; only the SHA-256 of a token is stored.
Roles: ``admin`` (the bureau, everything), ``clerk`` (one unit), ``operator`` (one
operator's canteens), ``auditor`` (read-only), ``diner`` (one cardholder: their own card,
purses and sales). What a scoped role may touch is checked in one place, :mod:`server.infra.scope`.
Views without a token check say so with :func:`public`. Terminals sign their HTTP requests with
their own secret: headers ``X-Terminal-Id``, ``X-Terminal-Time`` (ms), ``X-Terminal-Nonce``
(16–64 of ``[0-9A-Za-z_-]``, fresh per request) and ``X-Terminal-Sig`` = HMAC-SHA256 over
:func:`shared.protocol.terminal_request_bytes` (id, time, nonce, method, path and query).
The server keeps each nonce for as long as the request's time would still be accepted
(table ``terminal_nonces``, pruned as it goes), so a captured request cannot be replayed.
A revoked terminal's correctly signed request gets 401 ``terminal_revoked``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import g, request

from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.terminal_keys import accepted_secrets
from shared.errors import DomainError
from shared.protocol import hmac_sign, terminal_request_bytes

TERMINAL_CLOCK_TOLERANCE_MS = 15 * 60 * 1000
NONCE = re.compile(r"[0-9A-Za-z_-]{16,64}")
ROLES = ("admin", "clerk", "operator", "auditor", "diner")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    role: str
    unit_id: str | None = None
    operator: str | None = None
    terminal_id: str | None = None
    holder_id: str | None = None
    # which token (a prefix of its hash) and its label: tell two people of one role apart;
    # not part of equality, which is about role and scope
    token_id: str = field(default="", compare=False)
    label: str = field(default="", compare=False)


def actor_of(who: Principal) -> str:
    """Who is acting, for records such as refund requests: 'admin', 'clerk:U01' …"""
    scope = who.unit_id or who.operator or who.holder_id
    return f"{who.role}:{scope}" if scope else who.role


def actor_id_of(who: Principal) -> str:
    """Who is acting, down to the token or web account: 'admin[张三]#3fa9c2d1e0b4'. Used where
    two people must be told apart (a bank account change, the two approvals of a refund)."""
    return actor_of(who) + (f"[{who.label}]" if who.label else "") + f"#{who.token_id}"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_id(token: str) -> str:
    """A token's public id — to list, revoke and log it by: ``tok`` and the first 12 hex
    digits of the SHA-256 the tokens table keeps (the token itself is never shown again)."""
    return "tok" + _hash(token)[:12]


DAY_MS = 24 * 3600 * 1000
# how long a token lives unless its issuer says otherwise: staff tokens a quarter, a diner's
# token (on their own phone) a year; at most ten years
DEFAULT_EXPIRY_DAYS = {"admin": 90, "clerk": 90, "operator": 90, "auditor": 90, "diner": 365}
MAX_EXPIRY_DAYS = 3650


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str
    role: str
    expires_at_ms: int


def issue_token(
    conn: sqlite3.Connection,
    role: str,
    now_ms: int,
    *,
    unit_id: str | None = None,
    operator: str | None = None,
    holder_id: str | None = None,
    label: str = "",
    expires_days: int | None = None,
) -> IssuedToken:
    """Make a token; the clear text is returned once and never stored (only its SHA-256 and
    a public id to list and revoke it by). A clerk token is scoped to a unit, an operator
    token to an operator (company) name, a diner token to a cardholder; the other roles take
    no scope. It expires after ``expires_days`` (default by role, :data:`DEFAULT_EXPIRY_DAYS`)."""
    if role not in ROLES:
        raise DomainError("invalid_input", f"unknown role {role!r}")
    days = DEFAULT_EXPIRY_DAYS[role] if expires_days is None else expires_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise DomainError("invalid_input", f"expires_days must be a whole number from 1 to {MAX_EXPIRY_DAYS}")
    scope = {"clerk": unit_id, "operator": operator, "diner": holder_id}
    if role in scope and not scope[role]:
        what = {"clerk": "a unit", "operator": "an operator", "diner": "a cardholder"}[role]
        raise DomainError("invalid_input", f"a {role} token needs {what}")
    unit_id, operator, holder_id = (v if role == k else None for k, v in scope.items())
    if unit_id and conn.execute("SELECT 1 FROM units WHERE id = ?", (unit_id,)).fetchone() is None:
        raise DomainError("not_found", f"unit {unit_id}")
    if holder_id and conn.execute("SELECT 1 FROM holders WHERE id = ?", (holder_id,)).fetchone() is None:
        raise DomainError("not_found", f"holder {holder_id}")
    token = secrets.token_urlsafe(24)
    token_id = public_id(token)
    expires_at_ms = now_ms + days * DAY_MS
    conn.execute(
        "INSERT INTO tokens(token_hash, id, role, unit_id, operator, holder_id, label, created_at_ms, "
        "expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (_hash(token), token_id, role, unit_id, operator, holder_id, label, now_ms, expires_at_ms),
    )
    return IssuedToken(token_id, token, role, expires_at_ms)


def create_token(conn: sqlite3.Connection, role: str, now_ms: int, **kw: Any) -> str:
    """:func:`issue_token`, returning only the clear text."""
    return issue_token(conn, role, now_ms, **kw).token


def revoke_token(conn: sqlite3.Connection, token: str, now_ms: int) -> bool:
    """Stop a token from working; returns False when it was unknown or already revoked."""
    cur = conn.execute(
        "UPDATE tokens SET revoked_at_ms = ? WHERE token_hash = ? AND revoked_at_ms IS NULL",
        (now_ms, _hash(token)),
    )
    return cur.rowcount == 1


_LISTED = "id, role, unit_id, operator, holder_id, label, created_at_ms, expires_at_ms, revoked_at_ms"


def list_tokens(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every token without its secret (only the hash is stored anyway, and that is not shown)."""
    return [dict(r) for r in conn.execute(f"SELECT {_LISTED} FROM tokens ORDER BY created_at_ms, id")]


def revoke_token_id(conn: sqlite3.Connection, token_id: str, now_ms: int) -> dict[str, Any]:
    """Revoke a token by its public id (revoking it again changes nothing); returns its entry."""
    conn.execute(
        "UPDATE tokens SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL", (now_ms, token_id)
    )
    row = conn.execute(f"SELECT {_LISTED} FROM tokens WHERE id = ?", (token_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"token {token_id}")
    return dict(row)


def principal_for_token(conn: sqlite3.Connection, token: str, now_ms: int) -> Principal:
    """Who a bearer token speaks for; refused (401) when unknown, revoked or expired."""
    row = conn.execute(
        "SELECT id, role, unit_id, operator, holder_id, label, revoked_at_ms, expires_at_ms FROM tokens "
        "WHERE token_hash = ?",
        (_hash(token),),
    ).fetchone()
    if row is None:
        raise DomainError("unauthenticated", "unknown token")
    if row["revoked_at_ms"] is not None:
        raise DomainError("token_revoked", "this token was revoked")
    if row["expires_at_ms"] is not None and now_ms >= row["expires_at_ms"]:
        raise DomainError("token_expired", "this token has expired; ask an admin for a new one")
    return Principal(
        row["role"],
        row["unit_id"],
        row["operator"],
        holder_id=row["holder_id"],
        token_id=row["id"],
        label=row["label"],
    )


def terminal_request_signature(
    secret: bytes, terminal_id: str, at_ms: int, nonce: str, method: str, path: str, query: str = ""
) -> str:
    return hmac_sign(secret, terminal_request_bytes(terminal_id, at_ms, nonce, method, path, query))


def remember_nonce(conn: sqlite3.Connection, terminal_id: str, nonce: str, at_ms: int, now_ms: int) -> None:
    """Record a signed request's nonce until its time falls out of the tolerance window (after
    that the time check refuses it anyway); refuse one already seen (``request_replayed``)."""
    with write_txn(conn):
        conn.execute("DELETE FROM terminal_nonces WHERE expires_at_ms < ?", (now_ms,))
        cur = conn.execute(
            "INSERT OR IGNORE INTO terminal_nonces(terminal_id, nonce, expires_at_ms) VALUES (?, ?, ?)",
            (terminal_id, nonce, at_ms + TERMINAL_CLOCK_TOLERANCE_MS),
        )
    if cur.rowcount != 1:
        raise DomainError("request_replayed", "this signed request was already used")


def admit(who: Principal, roles: tuple[str, ...]) -> Principal:
    """The one role check, for the API (a bearer token, :func:`requires`) and the web pages
    (a signed-in browser, ``server.web.guard.page``) alike: ``who`` must hold one of
    ``roles``, else ``forbidden``. The admitted caller becomes ``g.principal``, which the
    scope checks (:mod:`server.infra.scope`) read."""
    if who.role not in roles:
        raise DomainError("forbidden", f"role {who.role} may not do this")
    g.principal = who
    return who


def requires(*roles: str) -> Callable[[F], F]:
    """Decorator: the caller must hold one of ``roles`` (a bearer token)."""

    def wrap(view: F) -> F:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                raise DomainError("unauthenticated", "bearer token required")
            admit(principal_for_token(get_db(), header[7:].strip(), get_clock().now_ms()), roles)
            return view(*args, **kwargs)

        inner._roles = roles  # type: ignore[attr-defined]  # read by the OpenAPI builder
        if hasattr(view, "_openapi"):
            inner._openapi = view._openapi  # type: ignore[attr-defined]
        return inner  # type: ignore[return-value]

    return wrap


def public(view: F) -> F:
    """Decorator: anyone may call this view, with or without a token (recorded in the
    OpenAPI document as ``x-public`` so that no route is public by accident)."""
    view._public = True  # type: ignore[attr-defined]
    return view


def requires_terminal(view: F) -> F:
    """Decorator: the request is signed by a provisioned terminal (see module doc)."""

    @functools.wraps(view)
    def inner(*args: Any, **kwargs: Any) -> Any:
        tid = request.headers.get("X-Terminal-Id", "")
        sig = request.headers.get("X-Terminal-Sig", "")
        try:
            at_ms = int(request.headers.get("X-Terminal-Time", ""))
        except ValueError as exc:
            raise DomainError("unauthenticated", "X-Terminal-Time missing") from exc
        row = (
            get_db()
            .execute(
                "SELECT secret_hex, state, next_secret_hex, previous_secret_hex, previous_until_ms "
                "FROM terminals WHERE id = ?",
                (tid,),
            )
            .fetchone()
        )
        if row is None:
            raise DomainError("unknown_terminal", tid)
        if abs(get_clock().now_ms() - at_ms) > TERMINAL_CLOCK_TOLERANCE_MS:
            raise DomainError("clock_skew", "request time too far from server time")
        nonce = request.headers.get("X-Terminal-Nonce", "")
        if not NONCE.fullmatch(nonce):
            raise DomainError("bad_signature", "X-Terminal-Nonce missing or malformed")
        query = request.query_string
        if not query.isascii():
            raise DomainError("bad_signature", "query string is not ASCII")
        # during a key rotation the next key and, for a grace period, the one before count too
        keys = accepted_secrets(row[0], row[2], row[3], row[4], get_clock().now_ms())
        if not sig.isascii() or not any(  # compare_digest: ASCII str only
            hmac.compare_digest(
                terminal_request_signature(
                    secret, tid, at_ms, nonce, request.method, request.path, query.decode()
                ),
                sig,
            )
            for _, secret in keys
        ):
            raise DomainError("bad_signature", "terminal request signature")
        if row[1] == "revoked":  # read on every request: a revocation holds at once
            raise DomainError("terminal_revoked", f"terminal {tid} was revoked")
        remember_nonce(get_db(), tid, nonce, at_ms, get_clock().now_ms())
        g.principal = Principal("terminal", terminal_id=tid)
        return view(*args, **kwargs)

    inner._terminal_auth = True  # type: ignore[attr-defined]
    if hasattr(view, "_openapi"):
        inner._openapi = view._openapi  # type: ignore[attr-defined]
    return inner  # type: ignore[return-value]
