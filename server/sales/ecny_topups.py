"""Self top-up through the digital RMB (数字人民币) gateway: the diner pays from their own
e-CNY wallet, the money lands on their self purse (自费) — once, and only for what the gateway
says was paid.

1. :func:`start` checks the amount (positive, within the top-up ceiling), records an order of
   ours (``ecny_topups``: number, holder, card, amount) in its own transaction, then opens it
   at the gateway and asks for the merchant QR code the wallet app pays (收款码). A gateway
   that cannot be reached leaves the order ``failed``; nothing was paid.
2. The wallet pays at the gateway. The server learns it either from the gateway's signed
   result callback (:func:`on_notification`, called by ``POST /api/v1/ecny/notify``) or by
   asking the gateway (:func:`refresh`, when the diner's page looks). Both end in
   :func:`confirm`, inside a write transaction: an order paid **for exactly its amount** is
   credited with :func:`server.registry.funds.topup` under the reference ``ecny:<order>``
   (so a second confirmation finds it ``credited`` and changes nothing); a paid order whose
   amount differs, or that the top-up rules now refuse, is ``held`` for an administrator with
   the reason (the money sits at the gateway; refund it there).
3. An order the gateway reports failed or closed is marked so; it never credits.

The gateway itself is :mod:`shared.ecny_gateway`'s adapter; only the simulated one exists in
this repository (see the README's "What is real and what is simulated").
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from typing import Any

from server.books.ledger import Violation
from server.infra.db import write_txn
from server.registry import ceilings, funds
from shared.amounts import check_amount
from shared.ecny_gateway import EcnyGateway, GatewayOrder, Notification
from shared.errors import DomainError

log = logging.getLogger("canteen.ecny")

SUBJECT = "食堂一卡通自费充值"
OPEN = "created"
FINAL = frozenset({"credited", "failed", "closed", "held"})


def ref_of(order_no: str) -> str:
    """The ledger reference of the top-up an order credits (one per order)."""
    return f"ecny:{order_no}"


def new_order_no() -> str:
    return "TU" + secrets.token_hex(10).upper()


def get(conn: sqlite3.Connection, order_no: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM ecny_topups WHERE order_no = ?", (order_no,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"top-up order {order_no}")
    return row


def of_holder(conn: sqlite3.Connection, holder_id: str, limit: int = 10) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT * FROM ecny_topups WHERE holder_id = ? ORDER BY created_at_ms DESC, order_no LIMIT ?",
        (holder_id, limit),
    ).fetchall()


def _set(
    conn: sqlite3.Connection, order_no: str, status: str, now_ms: int, detail: str = "", **cols: Any
) -> None:
    extra = "".join(f", {c} = ?" for c in cols)
    conn.execute(
        f"UPDATE ecny_topups SET status = ?, detail = ?, updated_at_ms = ?{extra} WHERE order_no = ?",
        (status, detail[:300], now_ms, *cols.values(), order_no),
    )


def start(
    conn: sqlite3.Connection, gateway: EcnyGateway, holder_id: str, card_id: str, amount_fen: int, now_ms: int
) -> sqlite3.Row:
    """Open a top-up order of ``amount_fen`` for the holder's card and get the merchant QR
    code to pay it (the gateway is called outside any transaction)."""
    check_amount(amount_fen, "top-up")
    order_no = new_order_no()
    with write_txn(conn):
        ceilings.check(conn, "max_topup_fen", amount_fen, "top-up")  # refused before paying, not after
        conn.execute(
            "INSERT INTO ecny_topups(order_no, holder_id, card_id, amount_fen, status, created_at_ms, "
            "updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (order_no, holder_id, card_id, amount_fen, OPEN, now_ms, now_ms),
        )
    try:
        gateway.create_order(order_no, amount_fen, SUBJECT)
        qr_text = gateway.merchant_qr(order_no)
    except DomainError as exc:
        with write_txn(conn):
            _set(conn, order_no, "failed", now_ms, f"{exc.code}: {exc.detail}")
        raise
    with write_txn(conn):
        _set(conn, order_no, OPEN, now_ms, qr_text=qr_text)
    return get(conn, order_no)


def confirm(conn: sqlite3.Connection, order: GatewayOrder, now_ms: int) -> sqlite3.Row:
    """Record what the gateway says of one of our orders (inside a write transaction); credit
    the self purse once when it was paid for exactly the order's amount."""
    row = get(conn, order.order_no)
    if row["status"] in FINAL:
        return row
    if order.status in ("failed", "closed"):
        _set(conn, row["order_no"], order.status, now_ms, order.fail_reason or "")
    elif order.status == "paid":
        if order.amount_fen != row["amount_fen"]:
            detail = f"paid {order.amount_fen} fen, ordered {row['amount_fen']}"
            log.error("e-CNY top-up %s: %s", row["order_no"], detail)
            _set(conn, row["order_no"], "held", now_ms, detail)
        else:
            _credit(conn, row, order.trade_no or "", now_ms)
    return get(conn, order.order_no)


def _credit(conn: sqlite3.Connection, row: sqlite3.Row, trade_no: str, now_ms: int) -> None:
    conn.execute("SAVEPOINT ecny_topup")
    try:
        funds.topup(conn, row["card_id"], row["amount_fen"], now_ms, ref=ref_of(row["order_no"]))
    except DomainError as exc:  # e.g. the ceiling was lowered since the order was opened
        conn.execute("ROLLBACK TO ecny_topup")
        log.error("e-CNY top-up %s paid but not credited: %s", row["order_no"], exc)
        _set(conn, row["order_no"], "held", now_ms, f"{exc.code}: {exc.detail}", trade_no=trade_no)
    else:
        _set(conn, row["order_no"], "credited", now_ms, trade_no=trade_no)
    conn.execute("RELEASE ecny_topup")


def refresh(conn: sqlite3.Connection, gateway: EcnyGateway, order_no: str, now_ms: int) -> sqlite3.Row:
    """Ask the gateway about an open order and record the answer (a final one is left as it
    is). An unreachable gateway changes nothing (``ecny_unavailable`` is raised)."""
    if get(conn, order_no)["status"] in FINAL:
        return get(conn, order_no)
    order = gateway.query(order_no)
    with write_txn(conn):
        return confirm(conn, order, now_ms)


def on_notification(conn: sqlite3.Connection, note: Notification, now_ms: int) -> bool:
    """The gateway's signed result callback for a top-up order (inside the callback's write
    transaction): True when it was one of ours."""
    if conn.execute("SELECT 1 FROM ecny_topups WHERE order_no = ?", (note.order_no,)).fetchone() is None:
        return False
    if note.status == "paid":
        confirm(conn, GatewayOrder(note.order_no, note.amount_fen, "paid", note.trade_no, note.at_ms), now_ms)
    return True


def violations(conn: sqlite3.Connection) -> list[Violation]:
    """Orders whose ledger credit is not exactly one top-up of the order's amount when
    credited, and none otherwise."""
    out = []
    for r in conn.execute(
        "SELECT o.order_no, o.status, o.amount_fen, count(t.id) AS txns, "
        "coalesce(sum((SELECT sum(amount_fen) FROM entries e WHERE e.txn_id = t.id)), 0) AS credited "
        "FROM ecny_topups o LEFT JOIN txns t ON t.kind = 'topup' AND t.ref = 'ecny:' || o.order_no "
        "GROUP BY o.order_no, o.status, o.amount_fen"
    ):
        expected = (1, r["amount_fen"]) if r["status"] == "credited" else (0, 0)
        if (r["txns"], r["credited"]) != expected:
            detail = f"order {r['order_no']} ({r['status']}): {r['credited']} fen credited"
            out.append(Violation("ecny_topup_mismatch", detail))
    return out
