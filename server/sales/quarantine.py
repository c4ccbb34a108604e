"""Quarantined sales: the admin's review of sales the server held back.

The ingest worker holds back a sale that no honest terminal could have made
(:mod:`server.sales.plausibility`): it moves no purse, is not paid to the canteen, and
waits in ``quarantined_sales`` (state ``pending``) with its reason. An admin

* **accepts** it (:func:`accept`): it is applied now, dated now, through the normal apply
  path (:meth:`server.sales.apply.SaleApplier.apply_accepted`), exactly once — the state
  moves ``pending → accepted`` in the same transaction, and a second decision is refused
  (``quarantine_decided``); the sale's row becomes the applied sale, so a terminal's late
  copy is answered ``duplicate`` with that result;
* or **rejects** it (:func:`reject`) with a reason the canteen's operator reads in the
  report; it is never applied.

A terminal with :data:`SUSPECT_PER_DAY` or more quarantined sales in one (Beijing) day is
*suspect*: listed in the report and logged at WARNING with the code ``terminal_suspect``
(:func:`suspects`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import replace
from typing import Any

from server.downstream.deltas import current_version, record_delta
from server.sales.apply import SaleApplier
from shared.clock import DAY_MS, start_of_china_day_ms
from shared.errors import DomainError
from shared.protocol import Sale

log = logging.getLogger(__name__)

SUSPECT_PER_DAY = 3
STATES = ("pending", "accepted", "rejected")


def _row(conn: sqlite3.Connection, terminal_id: str, seq: int) -> sqlite3.Row:
    row = conn.execute(
        "SELECT * FROM quarantined_sales WHERE terminal_id = ? AND seq = ?", (terminal_id, seq)
    ).fetchone()
    if row is None:
        raise DomainError("quarantine_not_found", f"{terminal_id}/{seq}")
    if row["state"] != "pending":
        raise DomainError("quarantine_decided", f"{terminal_id}/{seq} is already {row['state']}")
    return row


def accept(
    conn: sqlite3.Connection, terminal_id: str, seq: int, now_ms: int, by: str, note: str | None = None
) -> dict[str, Any]:
    """Apply a pending quarantined sale now, once (inside the caller's write txn)."""
    row = _row(conn, terminal_id, seq)
    sale = replace(Sale.from_dict(json.loads(row["sale_json"])), occurred_at_ms=now_ms)
    conn.execute("DELETE FROM sales WHERE terminal_id = ? AND seq = ?", (terminal_id, seq))
    applier = SaleApplier(conn, now_ms, current_version(conn) + 1)
    slot = applier.apply_accepted(sale, row["canteen_id"])
    result = applier.finish()[slot]
    if applier.changes or applier.extra_changes:
        record_delta(conn, list(applier.changes.values()) + applier.extra_changes, now_ms)
    conn.execute(
        "UPDATE quarantined_sales SET state = 'accepted', decided_at_ms = ?, decided_by = ?, "
        "decision_note = ? WHERE terminal_id = ? AND seq = ?",
        (now_ms, by, note, terminal_id, seq),
    )
    log.info("quarantine: %s/%s accepted by %s: %s", terminal_id, seq, by, result.status)
    return {
        **_item(
            conn.execute(_SELECT + " WHERE q.terminal_id = ? AND q.seq = ?", (terminal_id, seq)).fetchone()
        ),
        "result": result.to_dict(),
    }


def reject(
    conn: sqlite3.Connection, terminal_id: str, seq: int, now_ms: int, by: str, note: str
) -> dict[str, Any]:
    """Reject a pending quarantined sale for good, with a reason for the canteen."""
    if not isinstance(note, str) or not note.strip():
        raise DomainError("invalid_input", "a reason is required to reject a held sale")
    _row(conn, terminal_id, seq)
    conn.execute(
        "UPDATE quarantined_sales SET state = 'rejected', decided_at_ms = ?, decided_by = ?, "
        "decision_note = ? WHERE terminal_id = ? AND seq = ?",
        (now_ms, by, note.strip(), terminal_id, seq),
    )
    # a late copy from the terminal is now answered as a plain rejection
    conn.execute(
        "UPDATE sales SET reason = 'quarantine_rejected' WHERE terminal_id = ? AND seq = ?",
        (terminal_id, seq),
    )
    log.info("quarantine: %s/%s rejected by %s: %s", terminal_id, seq, by, note.strip())
    return _item(
        conn.execute(_SELECT + " WHERE q.terminal_id = ? AND q.seq = ?", (terminal_id, seq)).fetchone()
    )


_SELECT = (
    "SELECT q.terminal_id, q.seq, q.canteen_id, q.reason, q.detail, q.amount_fen, q.occurred_at_ms, "
    "q.quarantined_at_ms, q.state, q.decided_at_ms, q.decided_by, q.decision_note, q.sale_json "
    "FROM quarantined_sales q"
)


def _item(r: sqlite3.Row) -> dict[str, Any]:
    sale = json.loads(r["sale_json"])
    return {
        "terminal_id": r["terminal_id"],
        "seq": r["seq"],
        "canteen_id": r["canteen_id"],
        "card_id": sale.get("card_id"),
        "method": sale.get("method"),
        "kind": sale.get("kind"),
        "meal_period": sale.get("meal_period"),
        "offline": bool(sale.get("offline")),
        "items": sale.get("items") or [],
        "amount_fen": r["amount_fen"],
        "occurred_at_ms": r["occurred_at_ms"],
        "quarantined_at_ms": r["quarantined_at_ms"],
        "reason": r["reason"],
        "detail": r["detail"],
        "state": r["state"],
        "decided_at_ms": r["decided_at_ms"],
        "decided_by": r["decided_by"],
        "decision_note": r["decision_note"],
    }


def listing(
    conn: sqlite3.Connection, now_ms: int, *, state: str | None = None, canteens: list[str] | None = None
) -> dict[str, Any]:
    """The quarantined sales (newest first, ``state`` if given), the counts per state, and
    today's suspect terminals. ``canteens``: only these canteens' (None: all)."""
    if state is not None and state not in STATES:
        raise DomainError("invalid_input", f"state: one of {', '.join(STATES)}")
    where, args = [], []
    if state is not None:
        where.append("q.state = ?")
        args.append(state)
    if canteens is not None:
        where.append(f"q.canteen_id IN ({', '.join('?' * len(canteens))})")
        args.extend(canteens)
    sql = (
        _SELECT
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY q.quarantined_at_ms DESC, q.terminal_id, q.seq"
    )
    items = [_item(r) for r in conn.execute(sql, args)]
    counts = dict.fromkeys(STATES, 0)
    count_sql = "SELECT state, count(*), coalesce(sum(amount_fen), 0) FROM quarantined_sales"
    count_args: list[Any] = []
    if canteens is not None:
        count_sql += f" WHERE canteen_id IN ({', '.join('?' * len(canteens))})"
        count_args = list(canteens)
    amounts = dict.fromkeys(STATES, 0)
    for st, n, fen in conn.execute(count_sql + " GROUP BY state", count_args):
        counts[st], amounts[st] = n, fen
    suspect = [s for s in suspects(conn, now_ms) if canteens is None or s["canteen_id"] in canteens]
    return {"counts": counts, "amounts_fen": amounts, "suspect_terminals": suspect, "sales": items}


def suspects(
    conn: sqlite3.Connection, now_ms: int, terminal_ids: set[str] | None = None
) -> list[dict[str, Any]]:
    """Terminals with at least :data:`SUSPECT_PER_DAY` sales quarantined on the Beijing day
    of ``now_ms`` (only ``terminal_ids`` if given)."""
    start = start_of_china_day_ms(now_ms)
    sql = (
        "SELECT terminal_id, max(canteen_id), count(*) FROM quarantined_sales "
        "WHERE quarantined_at_ms >= ? AND quarantined_at_ms < ?"
    )
    args: list[Any] = [start, start + DAY_MS]
    if terminal_ids is not None:
        if not terminal_ids:
            return []
        sql += f" AND terminal_id IN ({', '.join('?' * len(terminal_ids))})"
        args.extend(sorted(terminal_ids))
    sql += " GROUP BY terminal_id HAVING count(*) >= ? ORDER BY terminal_id"
    args.append(SUSPECT_PER_DAY)
    return [
        {"terminal_id": r[0], "canteen_id": r[1], "quarantined_today": r[2]} for r in conn.execute(sql, args)
    ]


def warn_suspects(flagged: list[dict[str, Any]]) -> None:
    """One WARNING line per suspect terminal, with the stable code ``terminal_suspect``."""
    for s in flagged:
        log.warning(
            "terminal_suspect: terminal %s (%s) has %d sales quarantined today (threshold %d)",
            s["terminal_id"],
            s["canteen_id"],
            s["quarantined_today"],
            SUSPECT_PER_DAY,
        )


def summary(conn: sqlite3.Connection) -> dict[str, Any]:
    """What ``check`` reports: quarantined sales per state, and the pending ones listed."""
    counts = dict.fromkeys(STATES, 0)
    for st, n in conn.execute("SELECT state, count(*) FROM quarantined_sales GROUP BY state"):
        counts[st] = n
    pending = [
        {"terminal_id": r[0], "seq": r[1], "canteen_id": r[2], "reason": r[3], "amount_fen": r[4]}
        for r in conn.execute(
            "SELECT terminal_id, seq, canteen_id, reason, amount_fen FROM quarantined_sales "
            "WHERE state = 'pending' ORDER BY quarantined_at_ms, terminal_id, seq LIMIT 100"
        )
    ]
    return {"counts": counts, "pending": pending}


def resolve_by_reversal(
    conn: sqlite3.Connection, terminal_id: str, seq: int, now_ms: int, reversal_id: str
) -> bool:
    """The terminal reversed a sale the server holds for review: the hold is resolved —
    rejected for good (nothing had moved, nothing will), decided by the reversal. False if
    the sale is not pending review. Inside the caller's write txn."""
    cur = conn.execute(
        "UPDATE quarantined_sales SET state = 'rejected', decided_at_ms = ?, decided_by = ?, "
        "decision_note = ? WHERE terminal_id = ? AND seq = ? AND state = 'pending'",
        (now_ms, f"reversal:{reversal_id}", "终端已冲正 reversed at the terminal", terminal_id, seq),
    )
    if cur.rowcount == 0:
        return False
    conn.execute(
        "UPDATE sales SET reason = 'quarantine_reversed' WHERE terminal_id = ? AND seq = ?",
        (terminal_id, seq),
    )
    log.info("quarantine: %s/%s resolved by reversal %s", terminal_id, seq, reversal_id)
    return True
