"""Cards: report lost, found again, replace. Purses belong to the cardholder, not the card.

* **Lost (挂失)** blocks the card at once: its status becomes ``lost`` and a ``card`` delta
  goes to every terminal in the same commit (the deny-list version goes up), so an online
  terminal refuses it within a publish and an offline one as soon as it syncs.
* **Found** reactivates a lost card, unless a replacement was already issued.
* **Replacement (补卡)** issues a new card to the same holder; the old card stays ``lost``
  (or becomes ``retired`` if it was still active). Both purses carry over untouched,
  because they hang on the holder.

Every function runs inside the caller's write transaction.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from server.downstream.changes import card_change
from server.downstream.deltas import record_delta
from shared.errors import DomainError

CARD_ID = re.compile(r"^[0-9A-Za-z:\-]{1,64}$")  # a UID in hex, or the number printed on the card


def get(conn: sqlite3.Connection, card_id: str) -> sqlite3.Row:
    row = conn.execute(
        "SELECT c.*, h.unit_id, h.status AS holder_status FROM cards c JOIN holders h ON h.id = c.holder_id "
        "WHERE c.card_id = ?",
        (card_id,),
    ).fetchone()
    if row is None:
        raise DomainError("card_unknown", card_id)
    return row


def to_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "card_id": row["card_id"],
        "holder_id": row["holder_id"],
        "status": row["status"],
        "changed_at_ms": row["changed_at_ms"],
        "replaced_by": row["replaced_by"],
    }


def report_lost(conn: sqlite3.Connection, card_id: str, now_ms: int) -> dict[str, Any]:
    """Block the card now. Reporting a lost card again changes nothing."""
    card = get(conn, card_id)
    if card["status"] == "lost":
        return to_json(card)
    if card["status"] != "active":
        raise DomainError("card_not_active", f"{card_id} is {card['status']}")
    conn.execute("UPDATE cards SET status = 'lost', changed_at_ms = ? WHERE card_id = ?", (now_ms, card_id))
    record_delta(conn, [card_change(card_id, card["holder_id"], "lost")], now_ms)
    return to_json(get(conn, card_id))


def report_found(conn: sqlite3.Connection, card_id: str, now_ms: int) -> dict[str, Any]:
    card = get(conn, card_id)
    if card["status"] != "lost" or card["replaced_by"] is not None:
        raise DomainError(
            "card_not_active",
            f"{card_id} is {card['status']}"
            + (f", replaced by {card['replaced_by']}" if card["replaced_by"] else ""),
        )
    if card["holder_status"] != "active":
        raise DomainError("holder_left", card["holder_id"])
    conn.execute("UPDATE cards SET status = 'active', changed_at_ms = ? WHERE card_id = ?", (now_ms, card_id))
    record_delta(conn, [card_change(card_id, card["holder_id"], "active")], now_ms)
    return to_json(get(conn, card_id))


def replace(conn: sqlite3.Connection, old_card_id: str, new_card_id: str, now_ms: int) -> dict[str, Any]:
    """Issue ``new_card_id`` to the old card's holder; the old card can no longer pay."""
    old = get(conn, old_card_id)
    new_card_id = new_card_id.strip()
    if not CARD_ID.match(new_card_id):
        raise DomainError(
            "invalid_input", f"{new_card_id!r} is not a card number", zh=f"“{new_card_id}”不是卡号"
        )
    if old["holder_status"] != "active":
        raise DomainError("holder_left", old["holder_id"])
    if old["replaced_by"] is not None or old["status"] == "retired":
        raise DomainError("card_not_active", f"{old_card_id} was already replaced")
    if conn.execute("SELECT 1 FROM cards WHERE card_id = ?", (new_card_id,)).fetchone():
        raise DomainError("already_exists", f"card {new_card_id}")
    old_status = "lost" if old["status"] == "lost" else "retired"
    conn.execute(
        "UPDATE cards SET status = ?, replaced_by = ?, changed_at_ms = ? WHERE card_id = ?",
        (old_status, new_card_id, now_ms, old_card_id),
    )
    conn.execute(
        "INSERT INTO cards(card_id, holder_id, status, changed_at_ms) VALUES (?, ?, 'active', ?)",
        (new_card_id, old["holder_id"], now_ms),
    )
    record_delta(
        conn,
        [
            card_change(old_card_id, old["holder_id"], old_status),
            card_change(new_card_id, old["holder_id"], "active"),
        ],
        now_ms,
    )
    return to_json(get(conn, new_card_id))


def issue(conn: sqlite3.Connection, holder_id: str, card_id: str, now_ms: int) -> dict[str, Any]:
    """A first (or additional) card for a holder who has no active card."""
    holder = conn.execute("SELECT status FROM holders WHERE id = ?", (holder_id,)).fetchone()
    if holder is None:
        raise DomainError("not_found", f"holder {holder_id}")
    if holder["status"] != "active":
        raise DomainError("holder_left", holder_id)
    card_id = card_id.strip()
    if not CARD_ID.match(card_id):
        raise DomainError("invalid_input", f"{card_id!r} is not a card number", zh=f"“{card_id}”不是卡号")
    if conn.execute("SELECT 1 FROM cards WHERE card_id = ?", (card_id,)).fetchone():
        raise DomainError("already_exists", f"card {card_id}")
    active = conn.execute(
        "SELECT card_id FROM cards WHERE holder_id = ? AND status = 'active'", (holder_id,)
    ).fetchone()
    if active is not None:
        raise DomainError(
            "already_exists", f"{holder_id} already has active card {active[0]}; replace it instead"
        )
    conn.execute(
        "INSERT INTO cards(card_id, holder_id, status, changed_at_ms) VALUES (?, ?, 'active', ?)",
        (card_id, holder_id, now_ms),
    )
    record_delta(conn, [card_change(card_id, holder_id, "active")], now_ms)
    return to_json(get(conn, card_id))
