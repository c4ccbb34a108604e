"""Money invariants beyond the ledger's own: what ``canteen-server check`` verifies.

Each function returns :class:`~server.books.ledger.Violation` items (empty: the rule holds).
:func:`money_violations` runs them all; :func:`server.closing.check.all_violations` runs them
with the ledger's own (:func:`server.books.ledger.check`).

* ``sale_split_mismatch`` — each applied sale's entries equal its recorded split: from the
  holder's subsidy purse ``subsidy_fen − cleared_subsidy_fen``, from refund accounts
  ``cleared_subsidy_fen``, from the self purse ``self_fen``, all to its canteen's payable,
  ``subsidy_fen + self_fen = amount_fen``, ``0 ≤ overdraft_fen ≤ self_fen``; a digital-RMB
  sale has no entries; an applied sale always has a txn.
* ``statement_tampered`` / ``statement_ledger_mismatch`` — a stored statement still has its
  digest, and its settlement txn moved exactly net, fee and withholding.
* ``closed_quarter_changed`` — a settled quarter's gross is still the sum of its sales
  that were there when it closed (all its sales except late arrivals).
* ``payable_mismatch`` — each canteen's payable equals its purse-paid sales less what its
  statements settled, and is never negative.
* ``settled_twice_or_missed`` — what a canteen's statements settled is exactly its sales
  dated in closed quarters, less late arrivals still waiting for the next statement: every
  sale is settled once, none twice, none forgotten.
* ``clearing_mismatch`` — each clearing line matches the clearing txn, and what late sales
  took back from each refund account matches the ledger.
* ``allocation_mismatch`` — each allocation credited exactly headcount × per person.
* ``purse_withdrawal`` — money left a purse only to a canteen (a sale); subsidy only to a
  unit's refund (year-end clearing, a leaver's return); self money only to a leaver's own
  registered bank account after approval (``self_refund``): there is no cash path (不得提现).
* ``quarantine_mismatch`` — a sale held back for review moved no money unless accepted,
  and an accepted one is applied (``server.sales.quarantine``).
* ``reversal_mismatch`` — each applied reversal (冲正, ``server.sales.reversals``) reverses an
  applied sale of its own terminal for exactly its amount, and its entries mirror the sale's:
  every fen from the canteen's payable back to the account that paid it (the subsidy purse
  of the sale's year — or, that year cleared since, its refund — the self purse, a clawed-back
  refund); nothing to a purse that did not pay; a digital RMB or quarantined sale's reversal
  moves nothing; no sale is reversed twice.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from typing import Any

from server.books import ledger
from server.books.ledger import Violation
from server.books.periods import year_number_sql
from server.closing.settlement import GROSS_SQL, REVERSED_SQL, digest
from server.infra.schema import PURSE_PAID, REVERSAL_PURSE_PAID

# a sale's subsidy comes from the subsidy purse of the year it is dated in (第十条 年末清零)
_SUB = ledger.purse_id_sql("s.holder_id", "subsidy", year_number_sql("s.occurred_at_ms"))
_SELF = ledger.purse_id_sql("s.holder_id", "self")
_PAYABLE = ledger.canteen_payable_sql("s.canteen_id")


def sale_splits(conn: sqlite3.Connection) -> list[Violation]:
    out = []
    for r in conn.execute(
        f"""
        SELECT s.terminal_id, s.seq FROM sales s LEFT JOIN entries e ON e.txn_id = s.txn_id
        WHERE s.status = 'applied'
        GROUP BY s.terminal_id, s.seq
        HAVING max(s.txn_id) IS NULL
            OR (max(s.method) = 'ecny' AND count(e.id) > 0)
            OR (max(s.method) <> 'ecny' AND (
                   coalesce(sum(CASE WHEN e.from_account = {_SUB} THEN e.amount_fen END), 0)
                       <> max(s.subsidy_fen - s.cleared_subsidy_fen)
                OR coalesce(sum(CASE WHEN e.from_account = {_SELF} THEN e.amount_fen END), 0)
                       <> max(s.self_fen)
                OR coalesce(sum(CASE WHEN e.from_account LIKE '{ledger.REFUND_LIKE}'
                                THEN e.amount_fen END), 0)
                       <> max(s.cleared_subsidy_fen)
                OR coalesce(sum(e.amount_fen), 0) <> max(s.amount_fen)
                OR coalesce(sum(e.to_account <> {_PAYABLE}), 0) > 0
                OR max(s.subsidy_fen + s.self_fen) <> max(s.amount_fen)
                OR max(s.overdraft_fen) < 0 OR max(s.overdraft_fen) > max(s.self_fen)))
        LIMIT 20
        """
    ):
        out.append(Violation("sale_split_mismatch", f"sale {r[0]}/{r[1]}"))
    return out


def statements(conn: sqlite3.Connection) -> list[Violation]:
    out = []
    rows = conn.execute(
        "SELECT st.quarter, st.canteen_id, st.statement_json, st.digest, st.net_fen, st.fee_fen, "
        "st.withheld_fen, st.txn_id, st.payee FROM statements st"
    ).fetchall()
    for q, canteen, text, dig, net, fee, withheld, txn_id, payee in rows:
        if digest(text) != dig:
            out.append(Violation("statement_tampered", f"{q}/{canteen}"))
        expected = {
            ledger.operator_payout(payee): net,
            ledger.FEE_REVENUE: fee,
            ledger.QUALITY_WITHHELD: withheld,
        }
        moved: defaultdict[str, int] = defaultdict(int)
        if txn_id is not None:  # net flows: a negative statement moves back to the payable
            for src, to, amount in conn.execute(
                "SELECT from_account, to_account, amount_fen FROM entries WHERE txn_id = ?", (txn_id,)
            ):
                moved[to] += amount
                moved[src] -= amount
        moved.pop(ledger.canteen_payable(canteen), None)
        if {k: v for k, v in moved.items() if v} != {k: v for k, v in expected.items() if v}:
            out.append(Violation("statement_ledger_mismatch", f"{q}/{canteen}"))
    for q, start, end in conn.execute("SELECT quarter, start_ms, end_ms FROM settlement_periods").fetchall():
        now = {c: [n, a] for c, n, a in conn.execute(GROSS_SQL, (start, end))}
        for c, n, a in conn.execute(
            "SELECT canteen_id, count(*), sum(amount_fen) FROM late_sales "
            "WHERE occurred_at_ms >= ? AND occurred_at_ms < ? GROUP BY canteen_id",
            (start, end),
        ):
            now[c][0] -= n
            now[c][1] -= a
        for c, _, a in conn.execute(REVERSED_SQL, (start, end)):  # its gross is less its reversals
            now.setdefault(c, [0, 0])[1] -= a
        stored = {
            c: [n, a]
            for c, n, a in conn.execute(
                "SELECT canteen_id, sales_count, gross_fen FROM statements WHERE quarter = ?", (q,)
            )
        }
        for c in set(now) | set(stored):
            if now.get(c, [0, 0]) != stored.get(c, [0, 0]):
                out.append(
                    Violation(
                        "closed_quarter_changed",
                        f"{q}/{c}: statement {stored.get(c)}, sales now {now.get(c)}",
                    )
                )
    return out


def payables(conn: sqlite3.Connection) -> list[Violation]:
    out = []
    sold = dict(
        conn.execute(
            f"SELECT canteen_id, sum(amount_fen) FROM sales WHERE {PURSE_PAID} GROUP BY canteen_id"
        ).fetchall()
    )
    for canteen_id, fen in conn.execute(
        f"SELECT canteen_id, sum(amount_fen) FROM reversals WHERE {REVERSAL_PURSE_PAID} GROUP BY canteen_id"
    ):
        sold[canteen_id] = sold.get(canteen_id, 0) - fen
    owed_back: dict[str, int] = {}  # late reversals of settled sales: the operator owes them back
    settled = dict(
        conn.execute(
            "SELECT canteen_id, sum(gross_fen + adjustments_fen) FROM statements GROUP BY canteen_id"
        ).fetchall()
    )
    closed_through = conn.execute("SELECT max(end_ms) FROM settlement_periods").fetchone()[0]
    due: dict[str, int] = {}
    if closed_through is not None:
        due = dict(
            conn.execute(
                f"SELECT canteen_id, sum(amount_fen) FROM sales WHERE {PURSE_PAID} "
                "AND occurred_at_ms < ? GROUP BY canteen_id",
                (closed_through,),
            ).fetchall()
        )
        for canteen_id, waiting in conn.execute(
            "SELECT canteen_id, sum(amount_fen) FROM late_sales "
            "WHERE statement_quarter IS NULL GROUP BY canteen_id"
        ):
            due[canteen_id] = due.get(canteen_id, 0) - waiting
        for canteen_id, fen in conn.execute(
            f"SELECT canteen_id, sum(amount_fen) FROM reversals WHERE {REVERSAL_PURSE_PAID} "
            "AND occurred_at_ms < ? GROUP BY canteen_id",
            (closed_through,),
        ):
            due[canteen_id] = due.get(canteen_id, 0) - fen
        for canteen_id, waiting in conn.execute(
            "SELECT canteen_id, sum(amount_fen) FROM late_reversals "
            "WHERE statement_quarter IS NULL GROUP BY canteen_id"
        ):
            due[canteen_id] = due.get(canteen_id, 0) + waiting
            owed_back[canteen_id] = waiting
    for (canteen_id,) in conn.execute("SELECT id FROM canteens").fetchall():
        expected = sold.get(canteen_id, 0) - settled.get(canteen_id, 0)
        actual = ledger.balance(conn, ledger.canteen_payable(canteen_id))
        if actual != expected or actual < -owed_back.get(canteen_id, 0):
            out.append(
                Violation("payable_mismatch", f"{canteen_id}: ledger {actual}, sales less settled {expected}")
            )
        if settled.get(canteen_id, 0) != due.get(canteen_id, 0):
            out.append(
                Violation(
                    "settled_twice_or_missed",
                    f"{canteen_id}: statements settled {settled.get(canteen_id, 0)}, "
                    f"closed periods hold {due.get(canteen_id, 0)}",
                )
            )
    return out


def clearings(conn: sqlite3.Connection) -> list[Violation]:
    out = []
    for year, txn_id in conn.execute("SELECT year, txn_id FROM clearings").fetchall():
        lines = defaultdict(int)
        for holder, account, amount in conn.execute(
            "SELECT holder_id, refund_account, amount_fen FROM clearing_lines WHERE year = ?", (year,)
        ):
            lines[(holder, account)] += amount
        entries = defaultdict(int)
        if txn_id is not None:
            for src, dst, amount in conn.execute(
                "SELECT from_account, to_account, amount_fen FROM entries WHERE txn_id = ?", (txn_id,)
            ):
                try:
                    holder, purse, purse_year = ledger.parse_purse(src)
                except ValueError:
                    holder, purse, purse_year = src, "", None
                if purse != "subsidy" or purse_year is None or purse_year > year:
                    out.append(Violation("clearing_mismatch", f"{year}: clearing took from {src}"))
                entries[(holder, dst)] += amount
        if dict(lines) != dict(entries):
            out.append(Violation("clearing_mismatch", f"{year}: lines differ from the clearing txn"))
    clawed = dict(
        conn.execute(
            "SELECT refund_account, sum(clawed_back_fen) FROM clearing_lines "
            "GROUP BY refund_account HAVING sum(clawed_back_fen) > 0"
        ).fetchall()
    )
    taken = dict(
        conn.execute(
            "SELECT e.from_account, sum(e.amount_fen) FROM entries e JOIN txns t ON t.id = e.txn_id "
            f"WHERE t.kind = 'sale' AND e.from_account LIKE '{ledger.REFUND_LIKE}' GROUP BY e.from_account"
        ).fetchall()
    )
    for account, fen in conn.execute(  # reversals of late sales gave their claw-back back
        "SELECT e.to_account, sum(e.amount_fen) FROM entries e JOIN txns t ON t.id = e.txn_id "
        f"WHERE t.kind = 'reversal' AND e.to_account LIKE '{ledger.REFUND_LIKE}' GROUP BY e.to_account"
    ):
        taken[account] = taken.get(account, 0) - fen
    taken = {k: v for k, v in taken.items() if v}
    if clawed != taken:
        out.append(
            Violation("clearing_mismatch", f"late sales took {taken} from refunds, lines say {clawed}")
        )
    return out


def allocations(conn: sqlite3.Connection) -> list[Violation]:
    out = []
    for unit_id, q, per_person, headcount, total in conn.execute(
        """
        SELECT al.unit_id, al.quarter, al.per_person_fen, al.headcount, al.total_fen FROM allocations al
        LEFT JOIN entries e ON e.txn_id = al.txn_id AND e.from_account = ?
        GROUP BY al.unit_id, al.quarter
        HAVING count(e.id) <> max(al.headcount) OR coalesce(sum(e.amount_fen), 0) <> max(al.total_fen)
            OR coalesce(min(e.amount_fen), max(al.per_person_fen)) <> max(al.per_person_fen)
            OR coalesce(max(e.amount_fen), max(al.per_person_fen)) <> max(al.per_person_fen)
        """,
        (ledger.SYSTEM_INCOME,),
    ):
        out.append(
            Violation("allocation_mismatch", f"{unit_id}/{q}: {headcount} × {per_person} ≠ credits ({total})")
        )
    return out


def withdrawals(conn: sqlite3.Connection) -> list[Violation]:
    row = conn.execute(
        f"""
        SELECT count(*), min(e.from_account || ' -> ' || e.to_account)
        FROM entries e JOIN txns t ON t.id = e.txn_id
        JOIN accounts a ON a.id = e.from_account
        WHERE a.kind IN ('subsidy_purse', 'self_purse')
          AND NOT (t.kind = 'sale' AND e.to_account LIKE '{ledger.PAYABLE_LIKE}')
          AND NOT (t.kind IN ('year_end_clearing', 'leaver_return') AND a.kind = 'subsidy_purse'
                   AND e.to_account LIKE '{ledger.REFUND_LIKE}')
          AND NOT (t.kind = 'self_refund' AND a.kind = 'self_purse' AND e.to_account = ?)
        """,
        (ledger.SELF_REFUND_BANK,),
    ).fetchone()
    return [Violation("purse_withdrawal", f"{row[0]} entries, e.g. {row[1]}")] if row[0] else []


def quarantined(conn: sqlite3.Connection) -> list[Violation]:
    """A held sale moved no money unless an admin accepted it: its sales row is applied
    (with its txn) exactly when accepted, and has no txn otherwise."""
    return [
        Violation("quarantine_mismatch", f"sale {r[0]}/{r[1]} ({r[2]})")
        for r in conn.execute(
            """
            SELECT q.terminal_id, q.seq, q.state FROM quarantined_sales q
            LEFT JOIN sales s ON s.terminal_id = q.terminal_id AND s.seq = q.seq
            WHERE s.terminal_id IS NULL
               OR (q.state = 'accepted') <> (s.status = 'applied')
               OR (q.state <> 'accepted' AND s.txn_id IS NOT NULL)
            LIMIT 20
            """
        )
    ]


def reversals(conn: sqlite3.Connection) -> list[Violation]:
    """Each applied reversal mirrors its sale exactly (see the module doc)."""
    out = []

    def bad(r: dict[str, Any], why: str) -> None:
        out.append(Violation("reversal_mismatch", f"reversal {r['terminal_id']}/R{r['seq']}: {why}"))

    twice = conn.execute(
        "SELECT terminal_id, sale_seq FROM reversals WHERE status = 'applied' "
        "GROUP BY terminal_id, sale_seq HAVING count(*) > 1 LIMIT 5"
    ).fetchall()
    out += [Violation("reversal_mismatch", f"sale {t}/{q} reversed twice") for t, q in twice]
    cur = conn.execute(
        "SELECT r.*, s.status AS sale_status, s.method AS sale_method, s.amount_fen AS sale_amount, "
        "s.txn_id AS sale_txn, s.canteen_id AS sale_canteen, s.subsidy_fen AS sale_subsidy, "
        "s.self_fen AS sale_self, s.uuid AS sale_row_uuid FROM reversals r "
        "LEFT JOIN sales s ON s.terminal_id = r.terminal_id AND s.seq = r.sale_seq "
        "WHERE r.status = 'applied'"
    )
    names = [d[0] for d in cur.description]  # by name, whatever the connection's row factory
    for r in (dict(zip(names, row, strict=True)) for row in cur.fetchall()):
        moved = _reversal_entries(conn, r)
        if (
            r["sale_status"] is None
            or r["sale_row_uuid"] != r["sale_uuid"]
            or r["sale_amount"] != r["amount_fen"]
        ):
            bad(r, "not the amount of an applied sale of its terminal")
        elif r["sale_status"] != "applied" or r["sale_method"] == "ecny":
            if moved or r["subsidy_fen"] or r["self_fen"]:
                bad(r, "moved money for a sale that had moved none")
        else:
            paid = [
                (src, fen)
                for src, fen in conn.execute(
                    "SELECT from_account, amount_fen FROM entries WHERE txn_id = ?", (r["sale_txn"],)
                )
            ]
            back = sorted((dst, fen) for src, dst, fen in moved)
            mirror = sorted(paid)
            if any(src != ledger.canteen_payable(r["sale_canteen"]) for src, _, _ in moved):
                bad(r, "took money from somewhere other than its canteen's payable")
            elif back != mirror and not _cleared_since(conn, r, back, mirror):
                bad(r, f"gave back {back}, the sale paid {mirror}")
            elif (r["subsidy_fen"], r["self_fen"]) != (r["sale_subsidy"], r["sale_self"]):
                bad(r, "its split is not its sale's")
    return out[:20]


def _reversal_entries(conn: sqlite3.Connection, r: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(from, to, fen) of a reversal's txns: its own and, if any, its ``reversal_clearing``."""
    return [
        (src, dst, fen)
        for src, dst, fen in conn.execute(
            "SELECT e.from_account, e.to_account, e.amount_fen FROM txns t JOIN entries e ON e.txn_id = t.id "
            "WHERE t.kind IN ('reversal', 'reversal_clearing') AND t.ref = ?",
            (f"{r['terminal_id']}/R{r['seq']}",),
        )
    ]


def _cleared_since(
    conn: sqlite3.Connection, r: dict[str, Any], back: list[tuple[str, int]], paid: list[tuple[str, int]]
) -> bool:
    """The mirror holds with the subsidy purse of a year cleared since read as that
    clearing's refund, for exactly ``refunded_subsidy_fen``."""
    refunded = sum(fen for dst, fen in back if dst.startswith("refund:")) - sum(
        fen for src, fen in paid if src.startswith("refund:")
    )
    if refunded != r["refunded_subsidy_fen"] or refunded <= 0:
        return False
    rest_back = sorted((d, f) for d, f in back if not d.startswith("refund:"))
    rest_paid = sorted((s, f) for s, f in paid if not s.startswith("refund:") and ":subsidy:" not in s)
    subsidy_paid = sum(f for s, f in paid if ":subsidy:" in s)
    return rest_back == rest_paid and subsidy_paid == refunded


def money_violations(conn: sqlite3.Connection) -> list[Violation]:
    out: list[Violation] = []
    for rule in (
        sale_splits,
        statements,
        payables,
        clearings,
        allocations,
        withdrawals,
        quarantined,
        reversals,
    ):
        out += rule(conn)
    return out
