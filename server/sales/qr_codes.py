"""QR payment credentials (扫码支付凭证): issuing, revoking, and making codes for the phone.

Each cardholder may hold one current credential: an Ed25519 key pair with an expiry and an
offline allowance (the most a terminal may approve on QR codes for them while it cannot
reach the server). Issuing one revokes the previous one and records a ``qr_key`` downstream
change in the same transaction, so every terminal learns the public key; snapshots carry
all current keys (:func:`server.downstream.changes.qr_key_changes`).

The server stores public keys only. A credential's private key is derived when needed from
a secret that is itself derived from the server's own key (:func:`qr_secret`), so a copy of
the database cannot make codes. The diner's phone page is reached by an unguessable link
derived the same way (:func:`page_access`): whoever holds the link can show that holder's
codes — it is handed to the holder by a clerk (as a QR code to scan with the phone) and
dies with the credential.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from server.downstream.changes import qr_key_change
from server.downstream.deltas import record_delta
from server.registry.units import holder_of_card
from shared.errors import DomainError
from shared.paycode import make_code, public_key_hex
from shared.protocol import ServerKey

DAY_MS = 86_400_000
DEFAULT_VALID_DAYS = 90
DEFAULT_OFFLINE_ALLOWANCE_FEN = 3_000  # ¥30: about two meals while a terminal is cut off


@dataclass(frozen=True)
class Credential:
    id: str
    holder_id: str
    card_id: str
    public_key: str
    issued_at_ms: int
    expires_at_ms: int
    offline_allowance_fen: int
    revoked_at_ms: int | None = None
    revoked_reason: str | None = None

    def active(self, now_ms: int) -> bool:
        return self.revoked_at_ms is None and now_ms < self.expires_at_ms

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def change(self) -> dict[str, Any]:
        """The ``qr_key`` downstream change; a revoked credential expires at its revocation."""
        return qr_key_change(
            self.holder_id,
            self.public_key,
            self.expires_at_ms,
            self.revoked_at_ms,
            self.offline_allowance_fen,
        )


_COLS = (
    "id, holder_id, card_id, public_key, issued_at_ms, expires_at_ms, offline_allowance_fen, "
    "revoked_at_ms, revoked_reason"
)


def qr_secret(server_key: ServerKey) -> bytes:
    return hmac.new(bytes.fromhex(server_key.to_hex()), b"canteen/qr-credentials/v1", hashlib.sha256).digest()


def credential_seed(secret: bytes, credential_id: str) -> bytes:
    return hmac.new(secret, b"seed\x00" + credential_id.encode(), hashlib.sha256).digest()


def page_access(secret: bytes, credential_id: str) -> str:
    return hmac.new(secret, b"page\x00" + credential_id.encode(), hashlib.sha256).hexdigest()[:32]


def get(conn: sqlite3.Connection, credential_id: str) -> Credential:
    row = conn.execute(f"SELECT {_COLS} FROM qr_credentials WHERE id = ?", (credential_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"QR credential {credential_id}")
    return Credential(*row)


def for_holder(conn: sqlite3.Connection, holder_id: str) -> list[Credential]:
    """All of a holder's credentials, newest first."""
    return [
        Credential(*r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM qr_credentials WHERE holder_id = ? ORDER BY issued_at_ms DESC, rowid DESC",
            (holder_id,),
        )
    ]


def issue(
    conn: sqlite3.Connection,
    secret: bytes,
    card_id: str,
    now_ms: int,
    *,
    valid_days: int = DEFAULT_VALID_DAYS,
    offline_allowance_fen: int = DEFAULT_OFFLINE_ALLOWANCE_FEN,
) -> Credential:
    """A new credential for the card's holder (call inside a write txn); the old one is revoked."""
    if not 1 <= valid_days <= 366:
        raise DomainError("invalid_input", "valid_days must be 1..366")
    if not isinstance(offline_allowance_fen, int) or not 0 <= offline_allowance_fen <= 100_000:
        raise DomainError("invalid_input", "offline_allowance_fen must be 0..100000 fen")
    card = holder_of_card(conn, card_id)
    if card["status"] != "active":
        raise DomainError("card_blocked", f"card {card_id} is {card['status']}")
    for old in for_holder(conn, card["holder_id"]):
        if old.revoked_at_ms is None:
            conn.execute(
                "UPDATE qr_credentials SET revoked_at_ms = ?, revoked_reason = 'replaced' WHERE id = ?",
                (now_ms, old.id),
            )
    credential_id = secrets.token_hex(8)
    cred = Credential(
        id=credential_id,
        holder_id=card["holder_id"],
        card_id=card_id,
        public_key=public_key_hex(credential_seed(secret, credential_id)),
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + valid_days * DAY_MS,
        offline_allowance_fen=offline_allowance_fen,
    )
    conn.execute(
        f"INSERT INTO qr_credentials({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        tuple(asdict(cred).values()),
    )
    record_delta(conn, [cred.change()], now_ms)  # the new key replaces the old at terminals
    return cred


def revoke(conn: sqlite3.Connection, credential_id: str, now_ms: int, reason: str) -> dict[str, Any] | None:
    """Revoke (inside a write txn); returns the downstream change, or None if already revoked.
    The caller records the change (alone, or with others in its delta)."""
    cred = get(conn, credential_id)
    if cred.revoked_at_ms is not None:
        return None
    conn.execute(
        "UPDATE qr_credentials SET revoked_at_ms = ?, revoked_reason = ? WHERE id = ?",
        (now_ms, reason, credential_id),
    )
    return get(conn, credential_id).change()


def next_code(
    conn: sqlite3.Connection, secret: bytes, credential_id: str, now_ms: int
) -> tuple[str, Credential]:
    """A fresh payment code (call inside a write txn: it takes the next counter)."""
    cred = get(conn, credential_id)
    if not cred.active(now_ms):
        raise DomainError("qr_no_credential", f"credential {credential_id} is revoked or expired")
    counter = int(
        conn.execute("SELECT next_counter FROM qr_credentials WHERE id = ?", (credential_id,)).fetchone()[0]
    )
    conn.execute("UPDATE qr_credentials SET next_counter = next_counter + 1 WHERE id = ?", (credential_id,))
    card_id = _paying_card(conn, cred)
    return make_code(credential_seed(secret, credential_id), card_id, counter, now_ms), cred


def _paying_card(conn: sqlite3.Connection, cred: Credential) -> str:
    """The card the code names: the one the credential was issued for while it is active,
    else the holder's newest active card (a lost card was replaced; the key is the holder's)."""
    rows = conn.execute(
        "SELECT card_id, status FROM cards WHERE holder_id = ? ORDER BY rowid DESC", (cred.holder_id,)
    ).fetchall()
    active = [r[0] for r in rows if r[1] == "active"]
    if cred.card_id in active or not active:
        return cred.card_id
    return active[0]


def current_for_card(conn: sqlite3.Connection, card_id: str, now_ms: int) -> Credential | None:
    card = holder_of_card(conn, card_id)
    for cred in for_holder(conn, card["holder_id"]):
        if cred.active(now_ms) and cred.card_id == card_id:
            return cred
    return None
