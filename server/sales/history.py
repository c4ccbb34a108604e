"""A cardholder's history (消费记录): their applied sales, newest first, each with the
reversal (冲正) that gave it back, if any — what the diner sees on the API and a clerk at
``canteen-server holder history``. One reading for both."""

from __future__ import annotations

import sqlite3
from typing import Any

REVERSAL_FIELDS = ("terminal_id", "seq", "occurred_at_ms", "amount_fen", "subsidy_fen", "self_fen", "offline")


def holder_history(conn: sqlite3.Connection, holder_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The holder's applied sales, newest first (at most ``limit``); ``reversal`` is the
    applied reversal of each (its own id ``terminal/R<seq>``, time, what went back to each
    purse) or None; ``reversed`` says whether there is one."""
    rows = conn.execute(
        "SELECT s.uuid, s.terminal_id, s.seq, s.canteen_id, s.amount_fen, s.subsidy_fen, s.self_fen, "
        "s.overdraft_fen, s.kind, s.meal_period, s.method, s.occurred_at_ms, rt.seq IS NOT NULL AS rated, "
        "rv.seq AS r_seq, rv.occurred_at_ms AS r_at, rv.amount_fen AS r_amount, "
        "rv.subsidy_fen AS r_subsidy, rv.self_fen AS r_self, rv.offline AS r_offline "
        "FROM sales s "
        "LEFT JOIN ratings rt ON rt.terminal_id = s.terminal_id AND rt.seq = s.seq "
        "LEFT JOIN reversals rv ON rv.terminal_id = s.terminal_id AND rv.sale_seq = s.seq "
        "AND rv.status = 'applied' "
        "WHERE s.holder_id = ? AND s.status = 'applied' ORDER BY s.occurred_at_ms DESC LIMIT ?",
        (holder_id, limit),
    ).fetchall()
    out = []
    for r in rows:
        item = {k: r[k] for k in r.keys() if not k.startswith("r_")}
        item["rated"] = bool(r["rated"])
        item["reversed"] = r["r_seq"] is not None
        item["reversal"] = (
            None
            if r["r_seq"] is None
            else {
                "id": f"{r['terminal_id']}/R{r['r_seq']}",
                "terminal_id": r["terminal_id"],
                "seq": r["r_seq"],
                "occurred_at_ms": r["r_at"],
                "amount_fen": r["r_amount"],
                "subsidy_fen": r["r_subsidy"],
                "self_fen": r["r_self"],
                "offline": bool(r["r_offline"]),
            }
        )
        out.append(item)
    return out
