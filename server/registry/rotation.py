"""Rotating a terminal's key (HMAC secret, and the broker password derived from it).

Three steps, none of which loses a sale:

1. :func:`start` (``canteen-server rotate-terminal``): a new secret is made and kept as the
   terminal's *next* key. Nothing changes for the terminal yet; messages signed with its
   current key are accepted as before.
2. The terminal is offered the new key sealed under its current one
   (:func:`offer`, :mod:`shared.protocol.rekey`): on its retained ``down/rekey`` topic the
   next time it reports its status, and over HTTP when it asks. It stores the key (0600) and
   signs everything from then on with it — including the unsent sales still in its outbox,
   which are signed when they are sent.
3. The first message signed with the next key :func:`complete`\\ s the rotation: it becomes the
   current key, the old one is accepted for :data:`~server.infra.terminal_keys.GRACE_MS`
   more (batches signed before the switch and still on their way), and the broker's
   password file is rewritten with the password derived from the new key.

A rotation protects against a key that leaks later, not one already stolen (the thief could
open the offer): a terminal whose key is in doubt is revoked and enrolled again.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass

from server.infra.terminal_keys import GRACE_MS
from server.registry.terminals import bump_keys_version
from shared.errors import DomainError
from shared.protocol.rekey import Rekey, key_id, seal_key


@dataclass(frozen=True)
class RotationStarted:
    terminal_id: str
    current_key_id: str
    next_key_id: str


def start(conn: sqlite3.Connection, terminal_id: str, now_ms: int) -> RotationStarted:
    """Make the terminal's next key (call inside a write txn)."""
    row = conn.execute(
        "SELECT state, secret_hex, next_secret_hex FROM terminals WHERE id = ?", (terminal_id,)
    ).fetchone()
    if row is None:
        raise DomainError("not_found", f"terminal {terminal_id}")
    if row[0] == "revoked":
        raise DomainError("terminal_revoked", f"{terminal_id} is revoked")
    if row[2] is not None:
        raise DomainError("rotation_pending", f"{terminal_id} has not yet used the key offered to it")
    new = secrets.token_bytes(32)
    conn.execute(
        "UPDATE terminals SET next_secret_hex = ?, rotation_started_ms = ? WHERE id = ?",
        (new.hex(), now_ms, terminal_id),
    )
    bump_keys_version(conn)
    return RotationStarted(terminal_id, key_id(bytes.fromhex(row[1])), key_id(new))


def offer(conn: sqlite3.Connection, terminal_id: str) -> Rekey | None:
    """The sealed next key for a terminal with a rotation under way, else None."""
    row = conn.execute(
        "SELECT secret_hex, next_secret_hex FROM terminals WHERE id = ? AND state <> 'revoked'",
        (terminal_id,),
    ).fetchone()
    if row is None or row[1] is None:
        return None
    return seal_key(bytes.fromhex(row[0]), terminal_id, bytes.fromhex(row[1]))


def complete(conn: sqlite3.Connection, terminal_id: str, now_ms: int) -> bool:
    """The terminal signed with its next key: make it current, keep the old one for the
    grace period (call inside a write txn). False when no rotation was under way."""
    cur = conn.execute(
        "UPDATE terminals SET previous_secret_hex = secret_hex, previous_until_ms = ?, "
        "secret_hex = next_secret_hex, next_secret_hex = NULL, rotation_started_ms = NULL "
        "WHERE id = ? AND next_secret_hex IS NOT NULL",
        (now_ms + GRACE_MS, terminal_id),
    )
    if cur.rowcount != 1:
        return False
    bump_keys_version(conn)
    return True
