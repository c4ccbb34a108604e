"""A digest of the server's money: the same seed must end with the same one.

SHA-256 over the money tables in a fixed order — every account's balance, every ledger
transaction and entry, every sale's decision and split, allocations, statements,
clearings and their lines, late and quarantined sales. Left out are values that are
random by design (a sale's uuid, message ids, keys, nonces): they identify things, they
decide nothing, and the run's other outputs show they changed no decision.
"""

from __future__ import annotations

import hashlib
import sqlite3

MONEY_TABLES: tuple[tuple[str, str, str], ...] = (
    ("accounts", "id, kind, balance_fen", "id"),
    ("txns", "id, kind, ref, at_ms, memo", "id"),
    ("entries", "id, txn_id, from_account, to_account, amount_fen", "id"),
    (
        "sales",
        "terminal_id, seq, status, reason, card_id, holder_id, canteen_id, amount_fen, subsidy_fen, "
        "self_fen, overdraft_fen, cleared_subsidy_fen, kind, meal_period, visitor, offline, "
        "occurred_at_ms, received_at_ms, txn_id",
        "terminal_id, seq",
    ),
    (
        "allocations",
        "unit_id, quarter, per_person_fen, headcount, total_fen, at_ms, txn_id",
        "unit_id, quarter",
    ),
    ("settlement_periods", "quarter, start_ms, end_ms, closed_at_ms, forced", "quarter"),
    (
        "statements",
        "quarter, canteen_id, sales_count, gross_fen, adjustments_fen, net_fen, fee_fen, digest",
        "quarter, canteen_id",
    ),
    ("late_sales", "terminal_id, seq, canteen_id, amount_fen, statement_quarter", "terminal_id, seq"),
    ("clearings", "year, cutoff_ms, refund_to, at_ms, txn_id, forced", "year"),
    (
        "clearing_lines",
        "year, holder_id, unit_id, rank, refund_account, amount_fen, clawed_back_fen",
        "year, holder_id, unit_id",
    ),
    ("quarantined_sales", "terminal_id, seq, reason, amount_fen, occurred_at_ms, state", "terminal_id, seq"),
)


def money_digest(conn: sqlite3.Connection) -> str:
    h = hashlib.sha256()
    for table, columns, order in MONEY_TABLES:
        h.update(f"\x00{table}\x00".encode())
        for row in conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}"):  # noqa: S608 — names above
            h.update(repr(tuple(row)).encode())
            h.update(b"\n")
    return h.hexdigest()
