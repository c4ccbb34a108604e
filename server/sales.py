"""Applying terminal sales to the ledger, each at most once.

A sale is identified by ``(terminal_id, seq)`` and carries a ``uuid``. The first time the
server sees it, it decides — applied (entries from the purses to the canteen's payable,
subsidy first) or rejected (with a reason) — and stores the decision in ``sales``. Every
later copy gets that first decision back as ``duplicate``; a copy whose uuid differs from
the stored one (a terminal that lost its journal and reused numbers) is refused as
``sale_id_conflict`` and changes nothing.

:class:`SaleApplier` works inside one write transaction that will record one delta
version: every result it returns carries the cardholder's balance *as of the end of that
version*, so a terminal that applies "balance at version v" never sees a half-state.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from server import ledger
from server.double_spend import note_sale_credential
from server.holders import holder_change
from server.spend import split_payment
from shared.protocol import Sale, SaleResult
from shared.protocol.messages import Balance

_COLUMNS = (
    "terminal_id", "seq", "uuid", "status", "reason", "card_id", "holder_id", "unit_id",
    "canteen_id", "amount_fen", "subsidy_fen", "self_fen", "overdraft_fen", "method", "kind",
    "meal_period", "visitor", "offline", "occurred_at_ms", "received_at_ms", "txn_id",
    "balance_subsidy_fen", "balance_self_fen", "balance_version", "items_json",
)
_INSERT = (
    f"INSERT INTO sales({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
)


def _result(row: dict[str, Any] | sqlite3.Row, status: str) -> SaleResult:
    balance = None
    if row["balance_version"] is not None:
        balance = Balance(row["balance_subsidy_fen"], row["balance_self_fen"], row["balance_version"])
    return SaleResult(
        terminal_id=row["terminal_id"],
        seq=row["seq"],
        uuid=row["uuid"],
        status=status,
        reason=row["reason"],
        subsidy_fen=row["subsidy_fen"],
        self_fen=row["self_fen"],
        overdraft_fen=row["overdraft_fen"],
        holder_id=row["holder_id"],
        balance=balance,
    )


@dataclass
class _Pending:
    row: dict[str, Any]
    results: list[tuple[int, str]] = field(default_factory=list)  # (slot, status)


class SaleApplier:
    """Applies sales inside the caller's write txn; :meth:`finish` writes the sale rows."""

    def __init__(self, conn: sqlite3.Connection, now_ms: int, version: int) -> None:
        self.conn = conn
        self.now_ms = now_ms
        self.version = version
        self.changes: dict[str, dict[str, Any]] = {}
        self.extra_changes: list[dict[str, Any]] = []  # e.g. a QR credential revoked for a double spend
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0
        self._pending: dict[tuple[str, int], dict[str, Any]] = {}
        self._pending_uuids: set[str] = set()
        self._results: list[SaleResult | tuple[tuple[str, int], str]] = []
        self._finished = False

    # -- one sale -----------------------------------------------------------------------

    def apply(self, sale: Sale, terminal_canteen: str) -> int:
        """Decide one sale; returns its slot in :meth:`finish`'s result list."""
        slot = len(self._results)
        key = (sale.terminal_id, sale.seq)
        earlier = self._pending.get(key)
        if earlier is not None:
            same = earlier["uuid"] == sale.uuid
            self._count("duplicate" if same else "rejected")
            self._results.append((key, "duplicate") if same else self._reject(sale, "sale_id_conflict"))
            return slot
        row = self.conn.execute(
            "SELECT * FROM sales WHERE terminal_id = ? AND seq = ?", key
        ).fetchone()
        if row is not None:
            if row["uuid"] != sale.uuid:
                self._count("rejected")
                self._results.append(self._reject(sale, "sale_id_conflict"))
            else:
                self._count("duplicate")
                self._results.append(_result(row, "duplicate"))
            return slot
        if sale.uuid in self._pending_uuids or self.conn.execute(
            "SELECT 1 FROM sales WHERE uuid = ?", (sale.uuid,)
        ).fetchone():
            self._count("rejected")
            self._results.append(self._reject(sale, "sale_id_conflict"))
            return slot

        row_ = self._decide(sale, terminal_canteen)
        if row_["status"] == "applied" and sale.credential:  # QR code / SUN counter used twice?
            self.extra_changes += note_sale_credential(self.conn, sale, row_["holder_id"], self.now_ms)
        self._pending[key] = row_
        self._pending_uuids.add(sale.uuid)
        self._count(row_["status"])
        self._results.append((key, row_["status"]))
        return slot

    def _decide(self, sale: Sale, terminal_canteen: str) -> dict[str, Any]:
        row = _base_row(sale, self.now_ms)
        if sale.canteen_id != terminal_canteen:
            return {**row, "status": "rejected", "reason": "canteen_mismatch"}
        if sale.method == "ecny":  # settled by the gateway: recorded for totals, no purse moves
            row["txn_id"] = ledger.post(self.conn, "sale", [], self.now_ms, ref=sale.sale_id, memo="ecny")
            return row
        holder = self.conn.execute(
            "SELECT h.id, h.unit_id FROM cards c JOIN holders h ON h.id = c.holder_id "
            "WHERE c.card_id = ?",
            (sale.card_id,),
        ).fetchone()
        if holder is None:
            return {**row, "status": "rejected", "reason": "card_unknown"}
        holder_id = holder[0]
        sub_acct, self_acct = ledger.subsidy_purse(holder_id), ledger.self_purse(holder_id)
        b = ledger.balances(self.conn, [sub_acct, self_acct])
        split = split_payment(b[sub_acct], b[self_acct], sale.amount_fen)
        payable = ledger.canteen_payable(sale.canteen_id)
        row["txn_id"] = ledger.post(
            self.conn,
            "sale",
            [
                ledger.Move(sub_acct, payable, split.subsidy_fen),
                ledger.Move(self_acct, payable, split.self_fen),
            ],
            self.now_ms,
            ref=sale.sale_id,
        )
        self.changes[holder_id] = {}  # filled in finish(): the state at the end of the txn
        row.update(
            holder_id=holder_id,
            unit_id=holder[1],
            subsidy_fen=split.subsidy_fen,
            self_fen=split.self_fen,
            overdraft_fen=split.overdraft_fen,
        )
        return row

    # -- the end of the txn ---------------------------------------------------------------

    def finish(self) -> list[SaleResult]:
        """Write the new sale rows with the final balances; return every result in order."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        for holder_id in self.changes:
            self.changes[holder_id] = holder_change(self.conn, holder_id)
        for row in self._pending.values():
            change = self.changes.get(row["holder_id"]) if row["holder_id"] else None
            if change is not None:
                row["balance_subsidy_fen"] = change["subsidy_fen"]
                row["balance_self_fen"] = change["self_fen"]
                row["balance_version"] = self.version
        self.conn.executemany(_INSERT, [tuple(r[c] for c in _COLUMNS) for r in self._pending.values()])
        out: list[SaleResult] = []
        for item in self._results:
            if isinstance(item, SaleResult):
                out.append(item)
            else:
                key, status = item
                out.append(_result(self._pending[key], status))
        return out

    def _count(self, status: str) -> None:
        if status == "applied":
            self.applied += 1
        elif status == "duplicate":
            self.duplicates += 1
        else:
            self.rejected += 1

    @staticmethod
    def _reject(sale: Sale, reason: str) -> SaleResult:
        return SaleResult(sale.terminal_id, sale.seq, sale.uuid, "rejected", reason)


def _base_row(sale: Sale, now_ms: int) -> dict[str, Any]:
    return {
        "terminal_id": sale.terminal_id,
        "seq": sale.seq,
        "uuid": sale.uuid,
        "status": "applied",
        "reason": None,
        "card_id": sale.card_id,
        "holder_id": None,
        "unit_id": None,
        "canteen_id": sale.canteen_id,
        "amount_fen": sale.amount_fen,
        "subsidy_fen": 0,
        "self_fen": 0,
        "overdraft_fen": 0,
        "method": sale.method,
        "kind": sale.kind,
        "meal_period": sale.meal_period,
        "visitor": int(sale.visitor),
        "offline": int(sale.offline),
        "occurred_at_ms": sale.occurred_at_ms,
        "received_at_ms": now_ms,
        "txn_id": None,
        "balance_subsidy_fen": None,
        "balance_self_fen": None,
        "balance_version": None,
        "items_json": json.dumps([i.__dict__ for i in sale.items]) if sale.items else None,
    }
