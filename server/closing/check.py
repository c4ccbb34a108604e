"""Every invariant of the money, in one call: what ``canteen-server check`` and
``GET /api/v1/ledger/check`` verify.

The ledger's own invariants (:func:`server.books.ledger.check`: integer amounts, balances
that sum to zero and match their entries, no unexplained negative purse, no sale posted
twice) and the business invariants built on them (:func:`server.closing.audit.money_violations`:
sale splits, statements, payables, clearings, allocations, no withdrawal). The ledger knows
nothing of settlement; this module is where the two meet. Sales held back for review are
counted beside them (:func:`quarantine_summary`): reported, not a violation; so are reversals
(冲正) waiting for a sale the server has not received (:func:`reversal_summary`). Each digital
RMB top-up order is credited once, for its amount (:func:`server.sales.ecny_topups.violations`).
What is kept beside the books to read them fast is checked against them too: the takings per
15 minutes and per day (:func:`server.sales.takings.mismatches`) and the name index
(:func:`server.registry.name_search.mismatches`).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from server.books import ledger
from server.books.ledger import Violation
from server.closing.audit import money_violations
from server.infra.db import get_setting, set_setting, write_txn
from server.registry import name_search
from server.sales import ecny_topups, takings
from server.sales.quarantine import summary as quarantine_summary
from server.sales.reversals import summary as reversal_summary

__all__ = ["all_violations", "last_check", "quarantine_summary", "record_check", "reversal_summary"]

_LAST_CHECK = "ledger_check_last"


def all_violations(conn: sqlite3.Connection) -> list[Violation]:
    """Every violated invariant (empty: the books are consistent)."""
    derived = takings.mismatches(conn) + name_search.mismatches(conn)
    return ledger.check(conn) + money_violations(conn) + ecny_topups.violations(conn) + derived


def record_check(conn: sqlite3.Connection, violations: list[Violation], now_ms: int, by: str) -> None:
    """Remember a check's outcome (when, by whom, which codes) for the bureau's dashboard;
    its own short write transaction."""
    codes = sorted({v.code for v in violations})
    result = {"at_ms": now_ms, "ok": not violations, "violations": len(violations), "codes": codes, "by": by}
    with write_txn(conn):
        set_setting(conn, _LAST_CHECK, json.dumps(result))


def last_check(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The last recorded check (:func:`record_check`), or None when none has run."""
    text = get_setting(conn, _LAST_CHECK)
    return json.loads(text) if text else None
