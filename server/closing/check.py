"""Every invariant of the money, in one call: what ``canteen-server check`` and
``GET /api/v1/ledger/check`` verify.

The ledger's own invariants (:func:`server.books.ledger.check`: integer amounts, balances
that sum to zero and match their entries, no unexplained negative purse, no sale posted
twice) and the business invariants built on them (:func:`server.closing.audit.money_violations`:
sale splits, statements, payables, clearings, allocations, no withdrawal). The ledger knows
nothing of settlement; this module is where the two meet. Sales held back for review are
counted beside them (:func:`quarantine_summary`): reported, not a violation; so are reversals
(冲正) waiting for a sale the server has not received (:func:`reversal_summary`).
"""

from __future__ import annotations

import sqlite3

from server.books import ledger
from server.books.ledger import Violation
from server.closing.audit import money_violations
from server.sales.quarantine import summary as quarantine_summary
from server.sales.reversals import summary as reversal_summary

__all__ = ["all_violations", "quarantine_summary", "reversal_summary"]


def all_violations(conn: sqlite3.Connection) -> list[Violation]:
    """Every violated invariant (empty: the books are consistent)."""
    return ledger.check(conn) + money_violations(conn)
