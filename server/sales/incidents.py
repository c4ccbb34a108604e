"""Credential incidents: a QR code, an NFC SUN message or a digital RMB order used twice
(or a code the server could not verify), recorded for the bureau to review.

:func:`record_incident` is called inside the ingest transaction by
:mod:`server.sales.double_spend` and :mod:`server.sales.ecny`; :func:`incidents` lists them
(``GET /api/v1/qr/incidents``, ``canteen-server qr-incidents``).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from server.infra.db import bump_counter
from shared.protocol import Sale

log = logging.getLogger(__name__)


def record_incident(
    conn: sqlite3.Connection,
    kind: str,
    subject: str,
    counter: int | None,
    sale: Sale,
    holder_id: str | None,
    first_sale: str | None,
    action: str,
    now_ms: int,
) -> None:
    """Record an incident (both sales, amount, holder) for the bureau to review."""
    conn.execute(
        "INSERT INTO credential_incidents(kind, subject, counter, holder_id, card_id, first_sale, sale, "
        "amount_fen, action, at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            kind,
            subject,
            counter,
            holder_id,
            sale.card_id,
            first_sale,
            sale.sale_id,
            sale.amount_fen,
            action,
            now_ms,
        ),
    )
    bump_counter(conn, "credential_incidents")
    log.warning(
        "credential incident %s: sale %s (first %s), holder %s: %s",
        kind,
        sale.sale_id,
        first_sale,
        holder_id,
        action,
    )


def incidents(conn: sqlite3.Connection, since_ms: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            "SELECT id, kind, subject, counter, holder_id, card_id, first_sale, sale, amount_fen, action, "
            "at_ms FROM credential_incidents WHERE at_ms >= ? ORDER BY id LIMIT ?",
            (since_ms, limit),
        )
    ]
