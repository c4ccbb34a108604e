"""Previews of closing a period: the real close, run and undone, and what the person confirms.

A settlement or a year-end clearing is previewed by running the very function that closes it
(:func:`server.closing.settlement.settle_quarter`, :func:`server.closing.clearing.close_year`)
inside a write transaction that is then rolled back (:func:`rehearse`): the figures shown are
the ones the close would book, by the same code, not a second copy of the rules. The
transaction holds the write lock while it runs (a quarter of 5,000,000 sales settles in under
a second, ``server.settle_5m_s``), so sales arriving meanwhile wait, and none is lost.

The confirm form carries :func:`figures_digest` of the preview. The close compares the digest
of what it is about to book with it, inside its own transaction, and refuses
(``preview_outdated``, rolled back: nothing booked) when a late sale, a score or a payee's
bank account changed the figures after the person looked at them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from server.infra.db import write_txn

T = TypeVar("T")
# when it was closed, under which ledger txn, which terminals were behind (they report every
# few seconds): not figures; any sale that arrives meanwhile changes the figures themselves
NOT_FIGURES = frozenset({"closed_at_ms", "cleared_at_ms", "txn_id", "forced", "incomplete_terminals"})


class _Undo(Exception):  # noqa: N818  # not an error: how a rehearsal leaves its transaction
    def __init__(self, result: object) -> None:
        super().__init__("rehearsal")
        self.result = result


def rehearse(conn: sqlite3.Connection, action: Callable[[], T]) -> T:
    """``action()``'s result, with everything it wrote rolled back. A refusal it raises
    propagates (after the rollback), as it would from the real thing."""
    try:
        with write_txn(conn):
            raise _Undo(action())
    except _Undo as undo:
        return undo.result  # type: ignore[return-value]


def _figures(value: Any) -> Any:  # noqa: ANN401  # any JSON value
    if isinstance(value, dict):
        return {k: _figures(v) for k, v in value.items() if k not in NOT_FIGURES}
    if isinstance(value, list):
        return [_figures(v) for v in value]
    return value


def figures_digest(document: dict[str, Any]) -> str:
    """A digest of a settlement or clearing document's figures (not its times or txn ids)."""
    text = json.dumps(_figures(document), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
