"""One sale's path, for tracing it from the tap to the statement: what the server decided,
its ledger entries, whether it was held for review, and which settlement statement carries
it (its quarter's, or the next one's as a late adjustment) or that its quarter is still open.

The logs carry the same id (``terminal_id/seq``) from the terminal's tap through ingest
(``shared.log_setup``); ``canteen-server trace-sale T0001/17`` prints this.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from server.books.periods import Quarter
from server.infra.schema import PURSE_PAID
from shared.errors import DomainError


def parse_sale_id(text: str) -> tuple[str, int]:
    """``T0001/17`` → (``T0001``, 17)."""
    terminal_id, _, seq = text.strip().rpartition("/")
    if not terminal_id or not seq.isdigit():
        raise DomainError("invalid_input", f"a sale id looks like T0001/17, not {text!r}", zh=f"“{text}”")
    return terminal_id, int(seq)


def trace(conn: sqlite3.Connection, terminal_id: str, seq: int) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT uuid, status, reason, canteen_id, card_id, holder_id, amount_fen, subsidy_fen, "
        f"self_fen, overdraft_fen, method, kind, meal_period, offline, occurred_at_ms, received_at_ms, "
        f"txn_id, {PURSE_PAID} FROM sales WHERE terminal_id = ? AND seq = ?",
        (terminal_id, seq),
    ).fetchone()
    if row is None:
        raise DomainError(
            "sale_not_found",
            f"{terminal_id}/{seq}: not received by this server (still unsent, or lost in a restore: "
            "see canteen-terminal resend)",
            zh=f"{terminal_id}/{seq}",
        )
    keys = (
        "uuid status reason canteen_id card_id holder_id amount_fen subsidy_fen self_fen overdraft_fen "
        "method kind meal_period offline occurred_at_ms received_at_ms txn_id"
    ).split()
    sale = dict(zip(keys, tuple(row)[:-1], strict=True))
    purse_paid = bool(row[-1])
    entries = [
        {"from": r[0], "to": r[1], "amount_fen": r[2]}
        for r in conn.execute(
            "SELECT from_account, to_account, amount_fen FROM entries WHERE txn_id = ? ORDER BY id",
            (sale["txn_id"],),
        )
    ]
    held = conn.execute(
        "SELECT reason, state, decided_by, decision_note FROM quarantined_sales "
        "WHERE terminal_id = ? AND seq = ?",
        (terminal_id, seq),
    ).fetchone()
    return {
        "sale_id": f"{terminal_id}/{seq}",
        "sale": sale,
        "entries": entries,
        "quarantine": dict(zip(("reason", "state", "decided_by", "note"), held, strict=True))
        if held
        else None,
        "statement": _statement(conn, terminal_id, seq, sale, purse_paid),
    }


def _statement(
    conn: sqlite3.Connection, terminal_id: str, seq: int, sale: dict[str, Any], purse_paid: bool
) -> dict[str, Any]:
    """Which statement carries the sale: its quarter's; a late sale's later statement (as an
    adjustment); none yet (quarter open); none at all (not purse-paid)."""
    quarter = str(Quarter.of_ms(sale["occurred_at_ms"]))
    if not purse_paid:
        return {"quarter": quarter, "state": "not_settled_here", "why": "not applied, or paid by digital RMB"}
    late = conn.execute(
        "SELECT statement_quarter FROM late_sales WHERE terminal_id = ? AND seq = ?", (terminal_id, seq)
    ).fetchone()
    if late is not None:
        if late[0] is None:
            return {"quarter": quarter, "state": "late_pending", "why": "adjustment in the next statement"}
        quarter, how = late[0], "adjustment"
    else:
        how = "sale"
    st = conn.execute(
        "SELECT sales_count, gross_fen, net_fen, payee, digest FROM statements "
        "WHERE quarter = ? AND canteen_id = ?",
        (quarter, sale["canteen_id"]),
    ).fetchone()
    if st is None:
        return {"quarter": quarter, "state": "open", "why": "the quarter is not settled yet"}
    return {
        "quarter": quarter,
        "state": "settled",
        "as": how,
        "canteen_id": sale["canteen_id"],
        "sales_count": st[0],
        "gross_fen": st[1],
        "net_fen": st[2],
        "payee": st[3],
        "digest": st[4],
    }
