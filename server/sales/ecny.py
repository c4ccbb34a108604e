"""Digital RMB (数字人民币) at the server: the sales, the gateway's word, refunds, totals.

e-CNY sales settle outside the card system — the diner's wallet pays the canteen's merchant
account through the gateway — so they post no ledger movement (``server.sales.apply`` records each
with an empty ledger txn) and are excluded from the operators' payable. They still belong
to the canteen's takings: :func:`method_totals` reports sales per payment method, with
e-CNY refunds as their own line, for the canteen's totals and statements.

* :func:`note_ecny_sale` links each applied e-CNY sale to its gateway order (called from
  ``server.sales.double_spend`` inside the ingest transaction); an order claimed by two sales is an
  incident.
* :func:`record_notification` stores the gateway's signed result callback.
* :func:`reconcile` compares the two: orders the gateway says were paid that no terminal
  reported, and sales the gateway never confirmed.
* :func:`refund` returns money through the gateway (idempotent per refund number).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from server.infra.db import write_txn
from server.sales.incidents import record_incident
from shared.ecny_gateway import EcnyGateway, Notification
from shared.errors import DomainError
from shared.protocol import Sale


def note_ecny_sale(conn: sqlite3.Connection, sale: Sale, order_no: str, now_ms: int) -> None:
    earlier = conn.execute(
        "SELECT terminal_id, seq FROM ecny_sales WHERE order_no = ?", (order_no,)
    ).fetchone()
    if earlier is not None:
        record_incident(
            conn,
            "ecny_order_reused",
            order_no,
            None,
            sale,
            None,
            f"{earlier[0]}/{earlier[1]}",
            "reported",
            now_ms,
        )
        return
    conn.execute(
        "INSERT INTO ecny_sales(order_no, terminal_id, seq, canteen_id, amount_fen, occurred_at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (order_no, sale.terminal_id, sale.seq, sale.canteen_id, sale.amount_fen, sale.occurred_at_ms),
    )


def record_notification(conn: sqlite3.Connection, note: Notification, now_ms: int) -> None:
    """The gateway's result callback (already signature-checked); repeats are harmless."""
    conn.execute(
        "INSERT INTO ecny_payments(order_no, trade_no, amount_fen, refunded_fen, status, paid_at_ms, "
        "notified_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(order_no) DO UPDATE SET "
        "refunded_fen = max(ecny_payments.refunded_fen, excluded.refunded_fen), status = excluded.status, "
        "notified_at_ms = excluded.notified_at_ms",
        (note.order_no, note.trade_no, note.amount_fen, note.refunded_fen, note.status, note.at_ms, now_ms),
    )


def refunded_fen(conn: sqlite3.Connection, order_no: str) -> int:
    return int(
        conn.execute(
            "SELECT coalesce(sum(amount_fen), 0) FROM ecny_refunds WHERE order_no = ?", (order_no,)
        ).fetchone()[0]
    )


def sale_of(conn: sqlite3.Connection, order_no: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM ecny_sales WHERE order_no = ?", (order_no,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"no digital RMB sale for order {order_no}")
    return row


def check_refund(conn: sqlite3.Connection, order_no: str, amount_fen: int) -> sqlite3.Row:
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen <= 0:
        raise DomainError("invalid_input", "amount_fen must be a positive integer")
    sale = sale_of(conn, order_no)
    if refunded_fen(conn, order_no) + amount_fen > sale["amount_fen"]:
        raise DomainError("ecny_refund_too_large", f"{amount_fen} fen on {order_no}")
    return sale


def refund(
    conn: sqlite3.Connection,
    gateway: EcnyGateway,
    order_no: str,
    amount_fen: int,
    now_ms: int,
    by_role: str,
    reason: str = "",
) -> dict[str, Any]:
    """Refund through the gateway, then record it. The refund number is derived from what is
    already refunded, so retrying after a crash between the two steps repeats the same refund."""
    check_refund(conn, order_no, amount_fen)
    refund_no = f"{order_no}-r{refunded_fen(conn, order_no)}"
    done = gateway.refund(order_no, refund_no, amount_fen)  # raises DomainError; nothing recorded then

    with write_txn(conn):
        check_refund(conn, order_no, amount_fen)
        conn.execute(
            "INSERT INTO ecny_refunds(refund_no, order_no, amount_fen, at_ms, by_role, reason) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (done.refund_no, order_no, done.amount_fen, now_ms, by_role, reason),
        )
    return {"refund_no": done.refund_no, "order_no": order_no, "amount_fen": done.amount_fen, "at_ms": now_ms}


def method_totals(
    conn: sqlite3.Connection, canteen_id: str | None, from_ms: int, to_ms: int
) -> dict[str, Any]:
    """Applied sales per payment method (card / qr / face / ecny) in [from, to), e-CNY
    refunds made in that window (a reversed e-CNY sale's gateway refund among them) and the
    reversals (冲正) made in it, for one canteen or all; ``total_fen`` is net of both."""
    where = "status = 'applied' AND occurred_at_ms >= ? AND occurred_at_ms < ?"
    args: list[Any] = [from_ms, to_ms]
    if canteen_id:
        where += " AND canteen_id = ?"
        args.append(canteen_id)
    methods = {
        r[0]: {"count": r[1], "amount_fen": r[2]}
        for r in conn.execute(
            f"SELECT method, count(*), sum(amount_fen) FROM sales WHERE {where} "
            "GROUP BY method ORDER BY method",
            args,
        )
    }
    return with_refunds(conn, canteen_id, from_ms, to_ms, methods)


def with_refunds(
    conn: sqlite3.Connection,
    canteen_id: str | None,
    from_ms: int,
    to_ms: int,
    methods: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """Takings per method (``{method: {count, amount_fen}}``, however summed) with the e-CNY
    refunds made in [from, to) for one canteen or all, and the totals net of them."""
    args = [from_ms, to_ms, *([canteen_id] if canteen_id else [])]
    rwhere = "r.at_ms >= ? AND r.at_ms < ?" + (" AND s.canteen_id = ?" if canteen_id else "")
    refunds = conn.execute(
        "SELECT count(*), coalesce(sum(r.amount_fen), 0) "
        f"FROM ecny_refunds r JOIN ecny_sales s USING(order_no) WHERE {rwhere}",
        args,
    ).fetchone()
    ecny = methods.get("ecny", {"count": 0, "amount_fen": 0})
    reversed_ = {  # reversals (冲正) of these sales given back in the window, by method
        r[0]: {"count": r[1], "amount_fen": r[2]}
        for r in conn.execute(
            "SELECT method, count(*), sum(amount_fen) FROM reversals WHERE status = 'applied' "
            "AND occurred_at_ms >= ? AND occurred_at_ms < ?"
            + (" AND canteen_id = ?" if canteen_id else "")
            + " GROUP BY method ORDER BY method",
            args,
        )
    }
    purse_reversed = sum(v["amount_fen"] for m, v in reversed_.items() if m != "ecny")
    return {
        "canteen_id": canteen_id,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "methods": methods,
        "ecny_refunds": {"count": refunds[0], "amount_fen": refunds[1]},
        "ecny_net_fen": ecny["amount_fen"] - refunds[1],
        "reversals": reversed_,
        # an e-CNY reversal is a gateway refund, already among ecny_refunds
        "total_fen": sum(m["amount_fen"] for m in methods.values()) - refunds[1] - purse_reversed,
    }


def reconcile(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Orders paid at the gateway without a terminal sale, and sales the gateway never confirmed.
    (A sale still in a terminal's outbox shows as the first kind until it arrives.)"""
    unreported = [
        r[0]
        for r in conn.execute(
            "SELECT p.order_no FROM ecny_payments p LEFT JOIN ecny_sales s USING(order_no) "
            "WHERE s.order_no IS NULL AND p.refunded_fen < p.amount_fen ORDER BY p.order_no"
        )
    ]
    unconfirmed = [
        r[0]
        for r in conn.execute(
            "SELECT s.order_no FROM ecny_sales s LEFT JOIN ecny_payments p USING(order_no) "
            "WHERE p.order_no IS NULL ORDER BY s.order_no"
        )
    ]
    return {"paid_without_sale": unreported, "sale_without_payment": unconfirmed}
