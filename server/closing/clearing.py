"""Year-end clearing (年末清零, 办法 第十条, 方案 三.4): unspent subsidy goes back.

:func:`close_year` clears, in one write transaction, the subsidy left on every card at the
year's cutoff (00:00 on 1 January, Asia/Shanghai) and refunds it — to the unit that paid
it (default, 办法 第十条 "余额退回各市直单位") or to city finance (方案 三.4 "结余资金退回市
财政"; setting ``YEAR_END_REFUND_TO=city_finance``). The setting used is stored with the
clearing; the report is per unit either way. Self purses (自费充值) are never touched.

* **How much** per holder: what is left on their subsidy purse of the year
  (``holder:<id>:subsidy:<year>``, and of any earlier year not cleared yet). Subsidy of a
  year pays only for sales dated in that year (:mod:`server.sales.apply`, and the terminals
  likewise), so after the cutoff nothing but a late sale of that year touches the purse: the
  amount is the balance at the year end whichever day in January the clearing runs. Next
  year's subsidy (allocated early, in December) is in next year's purse and not cleared.
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
from server.books.settlement_rules import attribute, take_in_order
from server.closing.settlement import period_laggards
from server.downstream.deltas import record_delta
from server.registry.holders import holder_change
from shared.clock import china_datetime
from shared.errors import DomainError

REFUND_TARGETS = ("unit", "city_finance")


refund_account = ledger.year_end_refund


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

    credits = _credits_newest_first(conn, y, prev)
    moves: list[ledger.Move] = []
    lines: list[tuple[Any, ...]] = []
    for holder_id, (unit_id, purses) in _purses_to_clear(conn, y, prev).items():
        amount = sum(fen for _, fen in purses)
        for rank, (paying_unit, part) in enumerate(attribute(amount, credits.get(holder_id, []), unit_id)):
            account = refund_account(refund_to, paying_unit)
            taken, _ = take_in_order(part, purses)  # the oldest year's purse first
            purses = _less(purses, taken)
            moves.extend(ledger.Move(purse, account, fen) for purse, fen in taken)
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
    changed = sorted({line[1] for line in lines})
    if changed:
        record_delta(conn, [holder_change(conn, h, now_ms) for h in changed], now_ms)
    report = clearing_report(conn, y)
    assert report is not None
    return report, True


def _purses_to_clear(
    conn: sqlite3.Connection, year: int, prev: int | None
) -> dict[str, tuple[str, list[tuple[str, int]]]]:
    """Per holder: (their unit, [(subsidy purse, fen) …] oldest year first) of the subsidy
    purses with money left of the years this clearing covers (after ``prev``, to ``year``)."""
    out: dict[str, tuple[str, list[tuple[str, int]]]] = {}
    for holder_id, unit_id, account_id, balance in conn.execute(
        "SELECT h.id, h.unit_id, a.id, a.balance_fen FROM holders h JOIN accounts a "
        f"ON {ledger.is_subsidy_purse_sql('a.id', 'h.id')} "
        "WHERE a.kind = 'subsidy_purse' AND a.balance_fen > 0 ORDER BY h.id, a.id"
    ).fetchall():
        purse_year = ledger.parse_purse(account_id)[2]
        if purse_year is not None and purse_year <= year and (prev is None or purse_year > prev):
            out.setdefault(holder_id, (unit_id, []))[1].append((account_id, int(balance)))
    return out


def _less(purses: list[tuple[str, int]], taken: list[tuple[str, int]]) -> list[tuple[str, int]]:
    took = dict(taken)
    return [(purse, fen - took.get(purse, 0)) for purse, fen in purses if fen > took.get(purse, 0)]


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
        "WHERE l.year = ? GROUP BY l.unit_id, u.name ORDER BY l.unit_id",
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
