"""Year-end clearing (年末清零, 办法 第十条, 方案 三.4): unspent subsidy goes back.

:func:`close_year` clears, in one write transaction, the subsidy left on every card at the
year's cutoff (00:00 on 1 January, Asia/Shanghai) and refunds it — to the unit that paid
it (default, 办法 第十条 "余额退回各市直单位") or to city finance (方案 三.4 "结余资金退回市
财政"; setting ``YEAR_END_REFUND_TO=city_finance``). The setting used is stored with the
clearing; the report is per unit either way. Self purses (自费充值) are never touched.

* **How much** per holder: :func:`server.books.settlement_rules.clearable_fen` — the subsidy left
  at the cutoff, reconstructed from the balance now, allocations already made for later
  quarters, and subsidy spent on sales dated after the cutoff; never more than the purse
  holds now.
* **Whose**: the units that paid it. A holder who moved units during the year received
  allocations from several; spending is taken to use the oldest subsidy first, so the
  remainder is attributed to the newest allocations (:func:`~server.books.settlement_rules.attribute`).
* **Ledger**: one txn (kind ``year_end_clearing``, ref ``<year>``) moving each part from the
  holder's subsidy purse to ``refund:unit:<paying unit>`` or ``refund:city_finance``.
* **Late sales.** A sale dated before the cutoff that arrives after the clearing takes its
  subsidy part back out of that refund (:mod:`server.sales.apply`); the report shows these
  adjustments and the net refund per unit.
* **Completeness.** Like settlement: terminals that have not reported past the cutoff make
  the clearing refuse (``terminals_behind``) unless forced; years clear in order (a year
  after a cleared one may not be cleared before it, ``period_out_of_order``).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from typing import Any

from server.books import ledger
from server.books.periods import parse_year, year_cutoff_ms
from server.books.settlement_rules import attribute, clearable_fen
from server.closing.settlement import period_laggards
from server.downstream.deltas import record_delta
from server.registry.holders import holder_change
from shared.clock import china_datetime
from shared.errors import DomainError

REFUND_TARGETS = ("unit", "city_finance")


def refund_account(refund_to: str, unit_id: str) -> str:
    return ledger.unit_refund(unit_id) if refund_to == "unit" else ledger.CITY_FINANCE_REFUND


def close_year(
    conn: sqlite3.Connection, year: object, now_ms: int, *, refund_to: str = "unit", force: bool = False
) -> tuple[dict[str, Any], bool]:
    """Clear ``year`` (call inside a write txn). Returns (report, newly_cleared)."""
    y = parse_year(year)
    if refund_to not in REFUND_TARGETS:
        raise DomainError("invalid_input", f"refund_to must be one of {REFUND_TARGETS}")
    stored = clearing_report(conn, y)
    if stored is not None:
        return stored, False
    cutoff = year_cutoff_ms(y)
    if now_ms < cutoff:
        when = china_datetime(cutoff).strftime("%Y-%m-%d %H:%M")
        raise DomainError(
            "period_open", f"year {y} ends at {when} (Beijing time)", zh=f"{y}年度于北京时间 {when} 结束"
        )
    if conn.execute("SELECT 1 FROM clearings WHERE year > ?", (y,)).fetchone():
        raise DomainError("period_out_of_order", f"a year after {y} is already cleared")
    behind = period_laggards(conn, cutoff)
    if behind and not force:
        names = ", ".join(t["terminal_id"] for t in behind)
        raise DomainError("terminals_behind", f"{len(behind)} terminal(s) not reported past {y}: {names}")
    prev = conn.execute("SELECT max(year) FROM clearings").fetchone()[0]

    new_credit = _new_credits(conn, y)
    new_spend = _new_spend(conn, cutoff)
    credits = _credits_newest_first(conn, y, prev)
    moves: list[ledger.Move] = []
    lines: list[tuple[Any, ...]] = []
    changed: list[str] = []
    purse = ledger.purse_id_sql("h.id", "subsidy")
    for holder_id, unit_id, balance in conn.execute(
        f"SELECT h.id, h.unit_id, a.balance_fen FROM holders h JOIN accounts a ON a.id = {purse} "
        "WHERE a.balance_fen > 0 ORDER BY h.id"
    ).fetchall():
        amount = clearable_fen(balance, new_credit.get(holder_id, 0), new_spend.get(holder_id, 0))
        if amount <= 0:
            continue
        changed.append(holder_id)
        for rank, (paying_unit, part) in enumerate(attribute(amount, credits.get(holder_id, []), unit_id)):
            account = refund_account(refund_to, paying_unit)
            moves.append(ledger.Move(ledger.subsidy_purse(holder_id), account, part))
            lines.append((y, holder_id, paying_unit, rank, account, part))
    txn_id = ledger.post(conn, "year_end_clearing", moves, now_ms, ref=str(y)) if moves else None
    conn.execute(
        "INSERT INTO clearings(year, cutoff_ms, refund_to, at_ms, txn_id, forced, laggards_json) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (y, cutoff, refund_to, now_ms, txn_id, int(bool(behind)), json.dumps(behind, ensure_ascii=False)),
    )
    conn.executemany(
        "INSERT INTO clearing_lines(year, holder_id, unit_id, rank, refund_account, amount_fen) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        lines,
    )
    if changed:
        record_delta(conn, [holder_change(conn, h) for h in changed], now_ms)
    report = clearing_report(conn, y)
    assert report is not None
    return report, True


def _new_credits(conn: sqlite3.Connection, year: int) -> dict[str, int]:
    """Per holder: subsidy credited by allocations for quarters after ``year``."""
    return _allocation_credits(conn, "al.quarter > ?", (f"{year}Q4",))


def _allocation_credits(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for holder_id, amount, _ in _credit_rows(conn, where, args):
        out[holder_id] += amount
    return out


def _credit_rows(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[tuple[str, int, str]]:
    """(holder, fen, paying unit) of allocation credits to subsidy purses, newest first."""
    rows = conn.execute(
        "SELECT e.to_account, e.amount_fen, al.unit_id "
        "FROM allocations al JOIN entries e ON e.txn_id = al.txn_id "
        f"WHERE e.from_account = ? AND {where} ORDER BY al.quarter DESC, al.txn_id DESC, e.id",
        (ledger.SYSTEM_INCOME, *args),
    ).fetchall()
    return [(ledger.holder_of_purse(r[0]), int(r[1]), r[2]) for r in rows]


def _credits_newest_first(
    conn: sqlite3.Connection, year: int, prev: int | None
) -> dict[str, list[tuple[str, int]]]:
    """Per holder: (paying unit, fen) of the allocations this clearing covers, newest first."""
    where, args = "al.quarter <= ?", (f"{year}Q4",)
    if prev is not None:
        where, args = where + " AND al.quarter > ?", (*args, f"{prev}Q4")
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for holder_id, amount, unit_id in _credit_rows(conn, where, args):
        out[holder_id].append((unit_id, amount))
    return out


def _new_spend(conn: sqlite3.Connection, cutoff_ms: int) -> dict[str, int]:
    """Per holder: subsidy-purse spending on sales dated at or after the cutoff."""
    out: dict[str, int] = defaultdict(int)
    for (canteen_id,) in conn.execute("SELECT id FROM canteens").fetchall():
        for holder_id, fen in conn.execute(
            "SELECT holder_id, subsidy_fen - cleared_subsidy_fen FROM sales "
            "WHERE canteen_id = ? AND occurred_at_ms >= ? AND status = 'applied' AND holder_id IS NOT NULL",
            (canteen_id, cutoff_ms),
        ):
            out[holder_id] += fen
    return out


def clearing_report(
    conn: sqlite3.Connection, year: int, unit_ids: list[str] | None = None
) -> dict[str, Any] | None:
    """Per paying unit: holders, cleared, taken back by late sales, and the net refund."""
    row = conn.execute("SELECT * FROM clearings WHERE year = ?", (year,)).fetchone()
    if row is None:
        return None
    units = []
    for unit_id, name, holders, cleared, clawed in conn.execute(
        "SELECT l.unit_id, coalesce(u.name, ''), count(DISTINCT l.holder_id), sum(l.amount_fen), "
        "sum(l.clawed_back_fen) FROM clearing_lines l LEFT JOIN units u ON u.id = l.unit_id "
        "WHERE l.year = ? GROUP BY l.unit_id ORDER BY l.unit_id",
        (year,),
    ):
        if unit_ids is not None and unit_id not in unit_ids:
            continue
        units.append(
            {
                "unit_id": unit_id,
                "unit_name": name,
                "holders": holders,
                "cleared_fen": cleared,
                "late_sales_fen": clawed,
                "refund_fen": cleared - clawed,
                "refund_account": refund_account(row["refund_to"], unit_id),
            }
        )
    keys = ("holders", "cleared_fen", "late_sales_fen", "refund_fen")
    return {
        "year": year,
        "cutoff_ms": row["cutoff_ms"],
        "refund_to": row["refund_to"],
        "cleared_at_ms": row["at_ms"],
        "forced": bool(row["forced"]),
        "incomplete_terminals": json.loads(row["laggards_json"]),
        "units": units,
        "totals": {k: sum(u[k] for u in units) for k in keys},
    }
