"""Credentials used twice: catching a QR code or an NFC SUN message spent at two terminals.

Every applied sale that carries a ``credential`` is noted here, inside the ingest
transaction (:func:`note_sale_credential`, called by :class:`server.sales.apply.SaleApplier`):

* ``CQ1.…`` — a QR payment code: the server verifies it again against the holder's
  credentials and records (public key, counter) as used;
* ``sun:<UID>:<counter>`` — an NTAG 424 read: (UID, counter) is recorded as used;
* ``ecny:<order>`` — a digital RMB order: handed to :mod:`server.sales.ecny`.

A terminal refuses a code it has seen itself; only the server sees all terminals. When the
same code (or SUN counter) comes back from a second sale, **the sale is still applied**: the
terminal approved it on a valid signature (offline, or before it could know), the meal was
served, and the books must show it; refusing it would leave the canteen unpaid and the
terminal's journal out of step with the ledger. Instead the server

1. records a ``credential_incidents`` row (:mod:`server.sales.incidents`) (both sales, amount,
   holder) for the bureau to review — reported by ``GET /api/v1/qr/incidents`` and
   ``canteen-server qr-incidents``;
2. for a QR code, **revokes that credential** (a ``qr_key`` change expiring it now goes to
   every terminal in the same delta), so the copied code stops working everywhere and the
   holder must be issued a new one; the card itself keeps working;
3. for a SUN message, records it only: the card's key is not exposed by a replayed
   message, and blocking the card would punish its owner; a repeat shows in the report.

Any correction of the money (a refund to the holder after review) is a new ledger entry made
by the clerks, never an edit of the sale. The offline exposure per QR credential is bounded by
its offline allowance.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from server.sales import qr_codes
from server.sales.ecny import note_ecny_sale
from server.sales.incidents import record_incident
from shared.paycode import PaycodeError, looks_like_code, parse_code, signature_ok
from shared.protocol import Sale


def note_sale_credential(
    conn: sqlite3.Connection, sale: Sale, holder_id: str | None, now_ms: int
) -> list[dict[str, Any]]:
    """Record an applied sale's credential; returns downstream changes (revocations)."""
    cred = sale.credential
    if not cred:
        return []
    if sale.method == "ecny" and cred.startswith("ecny:"):
        note_ecny_sale(conn, sale, cred.removeprefix("ecny:"), now_ms)
        return []
    if sale.method == "qr" and looks_like_code(cred):
        return _note_qr(conn, sale, holder_id, now_ms)
    if sale.method == "card" and cred.startswith("sun:"):
        _note_sun(conn, sale, cred, holder_id, now_ms)
    return []


def _first_use(
    conn: sqlite3.Connection, kind: str, subject: str, counter: int, sale: Sale, now_ms: int
) -> str | None:
    """Record the use; returns the earlier sale's id if this (kind, subject, counter) was used."""
    row = conn.execute(
        "SELECT terminal_id, seq FROM credential_uses WHERE kind = ? AND subject = ? AND counter = ?",
        (kind, subject, counter),
    ).fetchone()
    if row is not None:
        return f"{row[0]}/{row[1]}"
    conn.execute(
        "INSERT INTO credential_uses(kind, subject, counter, terminal_id, seq, at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (kind, subject, counter, sale.terminal_id, sale.seq, now_ms),
    )
    return None


def _note_qr(
    conn: sqlite3.Connection, sale: Sale, holder_id: str | None, now_ms: int
) -> list[dict[str, Any]]:
    assert sale.credential is not None
    try:
        code = parse_code(sale.credential)
    except PaycodeError:
        code = None
    creds = qr_codes.for_holder(conn, holder_id) if holder_id else []
    signer = next((c for c in creds if code is not None and signature_ok(code, c.public_key)), None)
    if code is None or signer is None or code.card_id != sale.card_id:
        # a terminal accepted a code the server cannot verify: a fault or a tampered terminal
        record_incident(
            conn, "qr_unverified", sale.credential[:64], None, sale, holder_id, None, "reported", now_ms
        )
        return []
    first = _first_use(conn, "qr", signer.public_key, code.counter, sale, now_ms)
    if first is None:
        return []
    change = qr_codes.revoke(conn, signer.id, now_ms, f"double spend: {first} and {sale.sale_id}")
    action = "credential_revoked" if change is not None else "reported (credential already revoked)"
    record_incident(
        conn, "qr_double_spent", signer.public_key, code.counter, sale, holder_id, first, action, now_ms
    )
    return [change] if change is not None else []


def _note_sun(conn: sqlite3.Connection, sale: Sale, cred: str, holder_id: str | None, now_ms: int) -> None:
    parts = cred.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        record_incident(conn, "sun_malformed", cred[:64], None, sale, holder_id, None, "reported", now_ms)
        return
    uid, counter = parts[1], int(parts[2])
    first = _first_use(conn, "sun", uid, counter, sale, now_ms)
    if first is not None:
        record_incident(conn, "sun_replayed", uid, counter, sale, holder_id, first, "reported", now_ms)
