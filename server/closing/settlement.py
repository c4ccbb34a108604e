"""Quarterly settlement (季度结算, 第十二条, 方案 三.3): closing a quarter for every canteen.

:func:`settle_quarter` closes one quarter in one write transaction:

1. **Order and completeness.** The quarter must have ended (``period_open``) and be the one
   after the last settled quarter (``period_out_of_order``); the first settlement ever may
   be any ended quarter and also sweeps up every earlier-dated sale. Terminals that have
   not reported a watermark past the quarter's end (:func:`period_laggards`) may still hold
   sales of it: settlement **refuses** (``terminals_behind``, naming them) unless
   ``force=True``, in which case the period records which terminals were behind — their
   sales, when they arrive, become adjustment lines of the next statement.
2. **Figures** per canteen (:mod:`server.books.settlement_rules`): ``gross`` = purse-paid sales
   dated in the quarter (Asia/Shanghai, by ``occurred_at_ms``; digital-RMB sales are paid by
   the gateway and are not in the ledger, so they are not settled here) less the reversals
   (冲正, :mod:`server.sales.reversals`) dated in it (``reversals_fen``, shown apart);
   adjustment lines = sales that arrived after their own quarter was closed (``late_sales``)
   and, negative, reversals that did (``late_reversals``), one line per original quarter,
   day and kind, each withheld at its own quarter's pay percentage.
3. **Ledger**, one txn per canteen (kind ``settlement``, ref ``<quarter>/<canteen>``), all
   from the canteen's payable (支出专用账户): ``net`` → the payee's payout account,
   ``fee`` → ``system:fee_revenue``, withholding → ``system:quality_withheld``. Withheld
   money is income of the system, not the operator's; per 办法 第二十九条 such income goes
   to city finance, which is outside the card system — the account holds it and the
   statements show it per canteen.
4. **Immutability.** Statements are stored with a SHA-256 digest of their JSON; the period
   is closed. Settling the same quarter again returns the stored document unchanged.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from typing import Any

from server.books import ledger
from server.books.periods import Quarter, day_bounds_ms, day_number_sql, day_of_number
from server.books.settlement_rules import Adjustment, payee_nets, payee_payouts, settle
from server.closing.quality import pay_pct_for, score_of
from server.infra.schema import PURSE_PAID, REVERSAL_PURSE_PAID
from server.registry.operators import payee, payee_name
from server.registry.terminals import laggards
from shared.clock import china_datetime
from shared.errors import DomainError

GROSS_SQL = (
    "SELECT canteen_id, count(*), coalesce(sum(amount_fen), 0) FROM sales "
    f"WHERE {PURSE_PAID} AND occurred_at_ms >= ? AND occurred_at_ms < ? "
    "GROUP BY canteen_id"
)
# reversals dated in a period, less those that arrived after it closed (late_reversals):
# what a quarter's statement took off its gross
REVERSED_SQL = (
    "SELECT canteen_id, count(*), coalesce(sum(amount_fen), 0) FROM reversals r "
    f"WHERE {REVERSAL_PURSE_PAID} AND occurred_at_ms >= ? AND occurred_at_ms < ? "
    "AND NOT EXISTS (SELECT 1 FROM late_reversals l WHERE l.terminal_id = r.terminal_id AND l.seq = r.seq) "
    "GROUP BY canteen_id"
)


@dataclass(frozen=True)
class AdjustmentLine:
    """Sales of one earlier quarter's day settled late, withheld at that quarter's pay %."""

    date: str
    quarter: str  # the quarter the sales belong to
    reason: str  # 'late' / 'late_reversal' (arrived after their quarter closed), 'before_first_settlement'
    count: int
    amount_fen: int
    pay_pct: int
    withheld_fen: int = 0


@dataclass(frozen=True)
class Statement:
    """One canteen's statement for one quarter (结算单), as stored and shown.

    Built once, never changed: :meth:`to_json` is its JSON form (stored with a digest and
    served as is), and the ledger txn id is set with :func:`dataclasses.replace` once posted.
    """

    quarter: str
    canteen_id: str
    canteen_name: str
    unit_id: str
    operator: str
    self_operated: bool
    payee: dict[str, Any]  # the payee's record (:func:`server.registry.operators.payee`)
    sales_count: int
    gross_fen: int  # the quarter's sales less its reversals
    quality_score: int | None
    pay_pct: int
    withheld_gross_fen: int
    adjustments: tuple[AdjustmentLine, ...]
    adjustments_fen: int
    withheld_fen: int
    settlement_fen: int
    fee_fen: int
    net_fen: int
    warnings: tuple[str, ...]
    closed_at_ms: int
    txn_id: int | None = None
    reversals_count: int = 0  # reversals (冲正) dated in the quarter, taken off its gross
    reversals_fen: int = 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["adjustments"] = [asdict(line) for line in self.adjustments]
        out["warnings"] = list(self.warnings)
        if not self.reversals_count:  # a statement without reversals reads as it always did
            del out["reversals_count"], out["reversals_fen"]
        return out

    def text(self) -> str:
        """The stored JSON text (sorted keys, compact): what the digest covers."""
        return json.dumps(self.to_json(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def period_laggards(conn: sqlite3.Connection, end_ms: int) -> list[dict[str, Any]]:
    """Terminals that existed before ``end_ms`` and have not reported a watermark past it."""
    born_after = {r[0] for r in conn.execute("SELECT id FROM terminals WHERE created_at_ms >= ?", (end_ms,))}
    return [t for t in laggards(conn, end_ms) if t["terminal_id"] not in born_after]


def last_settled(conn: sqlite3.Connection) -> Quarter | None:
    row = conn.execute("SELECT quarter FROM settlement_periods ORDER BY end_ms DESC LIMIT 1").fetchone()
    return Quarter.parse(row[0]) if row else None


def settle_quarter(
    conn: sqlite3.Connection, quarter: str, now_ms: int, *, force: bool = False
) -> tuple[dict[str, Any], bool]:
    """Close ``quarter`` (call inside a write txn). Returns (document, newly_closed)."""
    q = Quarter.parse(quarter)
    stored = settlement_document(conn, str(q))
    if stored is not None:
        return stored, False
    if now_ms < q.end_ms:
        when = china_datetime(q.end_ms).strftime("%Y-%m-%d %H:%M")
        raise DomainError(
            "period_open", f"{q} ends at {when} (Beijing time)", zh=f"{q} 于北京时间 {when} 结束"
        )
    last = last_settled(conn)
    if last is not None and q != last.next():
        raise DomainError("period_out_of_order", f"the next quarter to settle is {last.next()}")
    behind = period_laggards(conn, q.end_ms)
    if behind and not force:
        names = ", ".join(t["terminal_id"] for t in behind)
        raise DomainError("terminals_behind", f"{len(behind)} terminal(s) not reported past {q}: {names}")

    gross = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(GROSS_SQL, (q.start_ms, q.end_ms))}
    reversed_ = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(REVERSED_SQL, (q.start_ms, q.end_ms))}
    adjustments = _adjustment_lines(conn, q, first=last is None)
    units = {r[0]: r[1] for r in conn.execute("SELECT id, name FROM units")}
    statements = []
    for canteen in conn.execute("SELECT * FROM canteens ORDER BY id").fetchall():
        count, gross_fen = gross.get(canteen["id"], (0, 0))
        lines = adjustments.get(canteen["id"], [])
        st = _statement(
            conn,
            q,
            canteen,
            units.get(canteen["unit_id"], ""),
            count,
            gross_fen - reversed_.get(canteen["id"], (0, 0))[1],
            lines,
            now_ms,
        )
        n, fen = reversed_.get(canteen["id"], (0, 0))
        statements.append(replace(st, reversals_count=n, reversals_fen=fen) if n else st)
    conn.execute(
        "INSERT INTO settlement_periods(quarter, start_ms, end_ms, closed_at_ms, forced, laggards_json) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (str(q), q.start_ms, q.end_ms, now_ms, int(bool(behind)), json.dumps(behind, ensure_ascii=False)),
    )
    for st in statements:
        _store(conn, st)
    conn.execute("UPDATE late_sales SET statement_quarter = ? WHERE statement_quarter IS NULL", (str(q),))
    conn.execute("UPDATE late_reversals SET statement_quarter = ? WHERE statement_quarter IS NULL", (str(q),))
    doc = settlement_document(conn, str(q))
    assert doc is not None
    return doc, True


def _adjustment_lines(
    conn: sqlite3.Connection, q: Quarter, *, first: bool
) -> dict[str, list[AdjustmentLine]]:
    """Per canteen: dated lines of sales that belong to earlier quarters but were not settled
    with them — late arrivals, and (first settlement only) everything dated before it."""
    day = day_number_sql("occurred_at_ms")
    groups: dict[tuple[str, int, str], list[int]] = defaultdict(lambda: [0, 0])
    sources: list[tuple[str, str, tuple[int, ...]]] = [
        (
            "late",
            f"SELECT canteen_id, {day}, count(*), sum(amount_fen) FROM late_sales "
            f"WHERE statement_quarter IS NULL GROUP BY 1, 2",
            (),
        ),
        (
            "late_reversal",
            f"SELECT canteen_id, {day}, count(*), -sum(amount_fen) FROM late_reversals "
            f"WHERE statement_quarter IS NULL GROUP BY 1, 2",
            (),
        ),
    ]
    if first:
        sources.append(
            (
                "before_first_settlement",
                f"SELECT canteen_id, {day}, count(*), sum(amount_fen) FROM sales WHERE {PURSE_PAID} "
                f"AND occurred_at_ms < ? GROUP BY 1, 2",
                (q.start_ms,),
            ),
        )
        sources.append(
            (
                "before_first_settlement",
                f"SELECT canteen_id, {day}, 0, -sum(amount_fen) FROM reversals WHERE {REVERSAL_PURSE_PAID} "
                f"AND occurred_at_ms < ? GROUP BY 1, 2",
                (q.start_ms,),
            ),
        )
    for reason, sql, args in sources:
        for canteen_id, day_number, count, amount in conn.execute(sql, args):
            g = groups[(canteen_id, int(day_number), reason)]
            g[0] += int(count)
            g[1] += int(amount)
    out: dict[str, list[AdjustmentLine]] = defaultdict(list)
    for (canteen_id, day_number, reason), (count, amount) in sorted(groups.items()):
        if count == 0 and amount == 0:
            continue
        date = day_of_number(day_number)
        original = str(Quarter.of_ms(day_bounds_ms(date)[0]))
        out[canteen_id].append(
            AdjustmentLine(date, original, reason, count, amount, pay_pct_for(conn, canteen_id, original))
        )
    return out


def _statement(
    conn: sqlite3.Connection,
    q: Quarter,
    canteen: sqlite3.Row,
    unit_name: str,
    count: int,
    gross_fen: int,
    lines: list[AdjustmentLine],
    now_ms: int,
) -> Statement:
    score = score_of(conn, canteen["id"], str(q))
    pct = pay_pct_for(conn, canteen["id"], str(q))
    self_operated = bool(canteen["self_operated"])
    figures = settle(gross_fen, pct, [Adjustment(x.amount_fen, x.pay_pct) for x in lines], self_operated)
    withheld_lines = tuple(
        replace(line, withheld_fen=withheld)
        for line, withheld in zip(lines, figures.withheld_adjustments, strict=True)
    )
    to = payee(conn, payee_name(canteen, unit_name))
    warnings = []
    if score is None:
        warnings.append("quality_score_missing")
    if figures.net_fen > 0 and not to["bank_account"]:
        warnings.append("payee_bank_account_missing")
    return Statement(
        quarter=str(q),
        canteen_id=canteen["id"],
        canteen_name=canteen["name"],
        unit_id=canteen["unit_id"],
        operator=canteen["operator"],
        self_operated=self_operated,
        payee=to,
        sales_count=count,
        gross_fen=gross_fen,
        quality_score=score,
        pay_pct=pct,
        withheld_gross_fen=figures.withheld_gross_fen,
        adjustments=withheld_lines,
        adjustments_fen=figures.adjustments_fen,
        withheld_fen=figures.withheld_fen,
        settlement_fen=figures.settlement_fen,
        fee_fen=figures.fee_fen,
        net_fen=figures.net_fen,
        warnings=tuple(warnings),
        closed_at_ms=now_ms,
    )


def _from_payable(payable: str, dest: str, fen: int) -> ledger.Move:
    """``fen`` from the payable to ``dest``; a negative amount (late reversals outweighing a
    statement's sales: the operator gives back) moves the other way."""
    return ledger.Move(payable, dest, fen) if fen >= 0 else ledger.Move(dest, payable, -fen)


def _store(conn: sqlite3.Connection, st: Statement) -> None:
    """Post the statement's settlement txn, then store it (with that txn's id) and its digest."""
    payable = ledger.canteen_payable(st.canteen_id)
    txn_id = None
    if st.gross_fen or st.adjustments_fen:
        txn_id = ledger.post(
            conn,
            "settlement",
            [
                _from_payable(payable, ledger.operator_payout(st.payee["name"]), st.net_fen),
                _from_payable(payable, ledger.FEE_REVENUE, st.fee_fen),
                _from_payable(payable, ledger.QUALITY_WITHHELD, st.withheld_fen),
            ],
            st.closed_at_ms,
            ref=f"{st.quarter}/{st.canteen_id}",
        )
    st = replace(st, txn_id=txn_id)
    text = st.text()
    conn.execute(
        "INSERT INTO statements(quarter, canteen_id, sales_count, gross_fen, adjustments_fen, withheld_fen, "
        "settlement_fen, fee_fen, net_fen, pay_pct, payee, txn_id, statement_json, digest) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            st.quarter,
            st.canteen_id,
            st.sales_count,
            st.gross_fen,
            st.adjustments_fen,
            st.withheld_fen,
            st.settlement_fen,
            st.fee_fen,
            st.net_fen,
            st.pay_pct,
            st.payee["name"],
            txn_id,
            text,
            digest(text),
        ),
    )


def digest(statement_json: str) -> str:
    return hashlib.sha256(statement_json.encode()).hexdigest()


def settlement_document(
    conn: sqlite3.Connection, quarter: str, canteen_ids: list[str] | None = None
) -> dict[str, Any] | None:
    """The stored settlement of a closed quarter (None if open), optionally only some canteens."""
    period = conn.execute("SELECT * FROM settlement_periods WHERE quarter = ?", (quarter,)).fetchone()
    if period is None:
        return None
    statements = [
        json.loads(r[0])
        for r in conn.execute(
            "SELECT statement_json FROM statements WHERE quarter = ? ORDER BY canteen_id", (quarter,)
        )
    ]
    if canteen_ids is not None:
        statements = [s for s in statements if s["canteen_id"] in canteen_ids]
    payees = {st["payee"]["name"] for st in statements}
    keys = (
        "sales_count",
        "gross_fen",
        "adjustments_fen",
        "withheld_fen",
        "settlement_fen",
        "fee_fen",
        "net_fen",
    )
    return {
        "quarter": quarter,
        "start_ms": period["start_ms"],
        "end_ms": period["end_ms"],
        "closed_at_ms": period["closed_at_ms"],
        "forced": bool(period["forced"]),
        "incomplete_terminals": json.loads(period["laggards_json"]),
        "statements": statements,
        "totals": {k: sum(s[k] for s in statements) for k in keys},
        # only the payees of the statements shown (an operator sees its own debt, no other's)
        "carried_fen": {p: fen for p, fen in payee_debts_before(conn, quarter).items() if p in payees},
    }


def payee_debts_before(conn: sqlite3.Connection, quarter: str) -> dict[str, int]:
    """What each payee still owed back (negative fen) when ``quarter`` was settled: negative
    statements of earlier quarters not yet collected from later payments
    (:func:`server.books.settlement_rules.payee_payouts`, quarter by quarter)."""
    by_quarter: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for q, text in conn.execute(
        "SELECT quarter, statement_json FROM statements WHERE quarter < ? ORDER BY quarter, canteen_id",
        (quarter,),
    ):
        by_quarter[q].append(json.loads(text))
    owed: dict[str, int] = {}
    for q in sorted(by_quarter):
        _, owed = payee_payouts(owed, payee_nets(by_quarter[q]))
    return owed
