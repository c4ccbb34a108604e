"""The double-entry ledger, in integer fen.

Every movement of money is one *entry* moving ``amount_fen`` (> 0) from one account to
another; entries are grouped in a *txn* (one business event: an allocation, a sale, a
settlement). An account's ``balance_fen`` is (money in − money out), kept in the same
transaction as its entries and checkable against them; because every entry subtracts from
one account what it adds to another, the balances of all accounts always sum to zero.
External parties appear as accounts whose balance goes negative as money comes in (a
unit's budget, the cardholders' bank) or positive as it leaves (operator payouts, refunds).
Corrections are new entries; no entry is ever updated or deleted.

Txn kinds: ``allocation`` (ref ``<unit>/<quarter>``), ``topup``, ``sale`` (ref
``<terminal>/<seq>``), ``settlement`` (ref ``<quarter>/<canteen>``), ``year_end_clearing``
(ref ``<year>``), and the registry's ``leaver_return`` and ``self_refund``.

Account ids (one function each, nobody formats them by hand):

======================================  ===================================================
``unit:<id>:budget``                    the unit's meal budget (source of allocations)
``bureau:meal_fund``                    食堂就餐经费专用账户 (the bureau's special account)
``system:income``                       收入专用账户 (system income special account)
``holder:<id>:subsidy:<YYYY>``          the cardholder's subsidy purse of one year: the
                                        allocations for that year's quarters, spendable
                                        only on sales dated in that year (第十条 年末清零)
``holder:<id>:self``                    the cardholder's self purse
``bank:topup``                          cardholders' own bank accounts (self top-ups)
``canteen:<id>:payable``                支出专用账户, payable to that canteen's operator
``system:fee_revenue``                  the 0.5% system fee
``system:quality_withheld``             payment withheld for poor quality scores (income of
                                        the system, 办法 第二十九条; shown per canteen)
``operator:<payee>:payout``             paid out to a payee: the operator name in
                                        ``canteens.operator`` (or the unit's name if none)
``refund:unit:<id>`` / ``refund:city_finance``  year-end clearing refunds (less late sales
                                        dated before the cutoff); a leaver's
                                        subsidy returned to their unit (txn kind ``leaver_return``)
``bank:self_refund``                    a leaver's self purse refunded to their own bank account
======================================  ===================================================
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from shared.amounts import check_balance, check_fen

BUREAU_MEAL_FUND = "bureau:meal_fund"
SYSTEM_INCOME = "system:income"
BANK_TOPUP = "bank:topup"
FEE_REVENUE = "system:fee_revenue"
QUALITY_WITHHELD = "system:quality_withheld"
CITY_FINANCE_REFUND = "refund:city_finance"


def unit_budget(unit_id: str) -> str:
    return f"unit:{unit_id}:budget"


def subsidy_purse(holder_id: str, year: int) -> str:
    """The holder's subsidy purse of ``year`` (allocations for that year's quarters)."""
    return f"holder:{holder_id}:subsidy:{int(year):04d}"


def self_purse(holder_id: str) -> str:
    return f"holder:{holder_id}:self"


def canteen_payable(canteen_id: str) -> str:
    return f"canteen:{canteen_id}:payable"


def operator_payout(operator_id: str) -> str:
    return f"operator:{operator_id}:payout"


def unit_refund(unit_id: str) -> str:
    return f"refund:unit:{unit_id}"


def year_end_refund(refund_to: str, unit_id: str) -> str:
    """Where a year's cleared subsidy goes: the paying unit's refund, or city finance."""
    return unit_refund(unit_id) if refund_to == "unit" else CITY_FINANCE_REFUND


def purse_id_sql(holder_expr: str, purse: str, year_expr: str | None = None) -> str:
    """SQL expression for the id of a holder's purse (``purse``: 'subsidy' with
    ``year_expr``, or 'self'), for queries that join holders to their purses;
    ``holder_expr`` and ``year_expr`` are trusted column names or ``?``."""
    if purse == "self" and year_expr is None:
        return f"('holder:' || {holder_expr} || ':self')"
    if purse == "subsidy" and year_expr is not None:
        return f"('holder:' || {holder_expr} || ':subsidy:' || printf('%04d', {year_expr}))"
    raise ValueError(purse)


def self_purse_holder_sql(account_expr: str) -> str:
    """SQL expression for the holder of a self purse, from its id (the inverse of
    :func:`self_purse`): lets a query that starts from accounts (an index on their balances)
    find the holder by the holders' primary key."""
    head, tail = self_purse("\0").split("\0")
    return f"substr({account_expr}, {len(head) + 1}, length({account_expr}) - {len(head) + len(tail)})"


def is_subsidy_purse_sql(account_expr: str, holder_expr: str) -> str:
    """SQL condition: ``account_expr`` is one of the holder's subsidy purses (any year); a
    range on the id, so the primary key serves it and no LIKE wildcard meets the id."""
    return (
        f"({account_expr} > ('holder:' || {holder_expr} || ':subsidy:') "
        f"AND {account_expr} < ('holder:' || {holder_expr} || ':subsidy;'))"
    )


# SQL LIKE patterns of account ids, for queries that pick accounts by kind from entries
REFUND_LIKE = "refund:%"  # every refund account: unit_refund(...) and CITY_FINANCE_REFUND
PAYABLE_LIKE = "canteen:%:payable"  # every canteen_payable(...)


def canteen_payable_sql(canteen_expr: str) -> str:
    """SQL expression for the id of a canteen's payable (see :func:`purse_id_sql`)."""
    return f"('canteen:' || {canteen_expr} || ':payable')"


def parse_purse(account_id: str) -> tuple[str, str, int | None]:
    """(holder id, 'subsidy' or 'self', the subsidy's year or None) of a purse account id;
    the one parser of purse ids."""
    prefix, _, rest = account_id.partition(":")
    year: int | None = None
    holder_id, _, purse = rest.rpartition(":")
    if len(purse) == 4 and purse.isascii() and purse.isdigit():
        year = int(purse)
        holder_id, _, purse = holder_id.rpartition(":")
    if (
        prefix != "holder"
        or not holder_id
        or (purse, year is None) not in (("subsidy", False), ("self", True))
    ):
        raise ValueError(f"not a purse: {account_id}")
    return holder_id, purse, year


def holder_of_purse(account_id: str) -> str:
    """The holder id of a purse account id (``holder:<id>:subsidy:2026`` → ``<id>``)."""
    return parse_purse(account_id)[0]


_KIND_OF_PREFIX = {
    "canteen": "payable",
    "unit": "unit_budget",
    "operator": "operator_payout",
    "refund": "refund",
}


def account_kind(account_id: str) -> str:
    """The kind of an account from its id: 'subsidy_purse', 'payable', 'unit_budget' …"""
    prefix = account_id.partition(":")[0]
    if prefix == "holder":
        return f"{parse_purse(account_id)[1]}_purse"
    return _KIND_OF_PREFIX.get(prefix, account_id)


def is_purse(account_id: str) -> bool:
    """Whether the account is a cardholder's purse (subsidy of any year, or self)."""
    return account_kind(account_id) in ("subsidy_purse", "self_purse")


class AccountCache:
    """Account ids a long-lived writer (the ingest worker) knows to exist.

    Accounts are never deleted, so an account that exists after a commit exists for good:
    ids created in the open transaction are *pending* and join the known set only when the
    owner calls :meth:`commit` after its transaction committed (:meth:`rollback` after a
    failed one), so a rolled-back account is never assumed to exist.
    """

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._pending: set[str] = set()

    def unknown(self, ids: set[str]) -> set[str]:
        return {a for a in ids if a not in self._known and a not in self._pending}

    def created(self, ids: set[str]) -> None:
        self._pending |= ids

    def seen(self, ids: Iterable[str]) -> None:
        """Accounts read from the database (before the open transaction created any):
        committed, so they exist for good, whatever becomes of this transaction."""
        self._known.update(ids)

    def commit(self) -> None:
        self._known |= self._pending
        self._pending = set()

    def rollback(self) -> None:
        self._pending = set()


@dataclass(frozen=True)
class Move:
    """Move ``amount_fen`` from ``source`` to ``dest``."""

    source: str
    dest: str
    amount_fen: int


@dataclass(frozen=True)
class Posting:
    """One txn to record: its kind, moves, ref and memo (see :func:`post_many`)."""

    kind: str
    moves: tuple[Move, ...]
    ref: str | None = None
    memo: str = ""


def post(
    conn: sqlite3.Connection,
    kind: str,
    moves: Iterable[Move],
    at_ms: int,
    *,
    ref: str | None = None,
    memo: str = "",
    accounts: AccountCache | None = None,
) -> int:
    """Record one txn with its entries and update the balances. Call inside a write txn.

    Moves of zero are skipped (a purse that paid nothing); a negative or non-int amount is a
    programming error and raises before anything is written. An amount outside the range the
    wire carries (:mod:`shared.amounts`) is refused with ``amount_out_of_range`` before
    anything is written; a resulting balance outside it is refused the same way once the
    balances moved, and the write transaction rolls back (nothing of the txn stays).
    Balances move in place (``balance_fen = balance_fen + delta``, one statement): no
    balance is read and written back, so no other writer's change can be lost in between,
    whatever the database. ``accounts`` (optional) lets a busy writer skip creating accounts
    it already knows exist (see :class:`AccountCache`).
    """
    return post_many(conn, [Posting(kind, tuple(moves), ref, memo)], at_ms, accounts=accounts)[0]


def note_existing(conn: sqlite3.Connection, accounts: AccountCache, ids: Iterable[str]) -> None:
    """Tell the cache which of these accounts it does not know already exist (one query per
    400), so :func:`record_many` does not insert them again: on PostgreSQL an ``INSERT …
    ON CONFLICT DO NOTHING`` that meets a row another transaction is updating (a canteen's
    payable, moved under another ingest transaction's tail lock) waits for that commit."""
    unknown = sorted(accounts.unknown(set(ids)))
    for i in range(0, len(unknown), 400):
        chunk = unknown[i : i + 400]
        marks = ", ".join("?" * len(chunk))
        accounts.seen(r[0] for r in conn.execute(f"SELECT id FROM accounts WHERE id IN ({marks})", chunk))


_POST_CHUNK = 200  # txns per INSERT (4 parameters each), balance pairs per UPDATE


def post_many(
    conn: sqlite3.Connection,
    postings: Iterable[Posting],
    at_ms: int,
    *,
    accounts: AccountCache | None = None,
) -> list[int]:
    """Record several txns as :func:`post` records one, in a few statements whatever their
    number (the ingest worker's batch: a round trip per statement is what a networked
    database costs); returns their txn ids in order. Several postings need distinct refs
    (the txn ids come back by ref). Every move is checked before anything is written; each
    account's balance moves once by the sum of its deltas (``balance_fen = balance_fen +
    delta``) and the result is checked like :func:`post`'s."""
    ids, delta = record_many(conn, postings, at_ms, accounts=accounts)
    move_balances(conn, delta)
    return ids


def record_many(
    conn: sqlite3.Connection,
    postings: Iterable[Posting],
    at_ms: int,
    *,
    accounts: AccountCache | None = None,
) -> tuple[list[int], dict[str, int]]:
    """The first half of :func:`post_many`: check every move, record the txns, their
    accounts and entries; returns the txn ids in order and each account's net delta, whose
    balances the caller must move with :func:`move_balances` in the same write transaction
    (all at once, or in parts: the ingest moves the cardholders' purses before its tail lock
    and the shared accounts under it)."""
    items = [(p, [m for m in p.moves if m.amount_fen != 0]) for p in postings]
    for _, moves in items:
        for m in moves:
            if not isinstance(m.amount_fen, int) or isinstance(m.amount_fen, bool) or m.amount_fen < 0:
                raise ValueError(f"ledger amounts are positive int fen, got {m.amount_fen!r}")
            if m.source == m.dest:
                raise ValueError(f"a move needs two different accounts, got {m.source}")
            check_fen(m.amount_fen, f"move {m.source} -> {m.dest}")
    refs = [p.ref for p, _ in items]
    if len(refs) > 1 and (None in refs or len(set(refs)) < len(refs)):
        raise ValueError("postings of one call need distinct refs")
    ids: list[int] = []
    for i in range(0, len(items), _POST_CHUNK):
        chunk = items[i : i + _POST_CHUNK]
        rows = conn.execute(
            "INSERT INTO txns(kind, ref, at_ms, memo) VALUES "
            + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            + " RETURNING id, ref",
            [x for p, _ in chunk for x in (p.kind, p.ref, at_ms, p.memo)],
        ).fetchall()
        by_ref = {r[1]: int(r[0]) for r in rows}
        ids += [int(rows[0][0])] if len(chunk) == 1 else [by_ref[p.ref] for p, _ in chunk]
    delta: dict[str, int] = {}
    for _, moves in items:
        for m in moves:
            delta[m.source] = delta.get(m.source, 0) - m.amount_fen
            delta[m.dest] = delta.get(m.dest, 0) + m.amount_fen
    if not delta:
        return ids, delta
    touched = set(delta)
    if accounts is not None:
        touched = accounts.unknown(touched)
        accounts.created(touched)
    if touched:  # in account order: two writers creating the same accounts queue, never deadlock
        conn.executemany(
            "INSERT OR IGNORE INTO accounts(id, kind) VALUES (?, ?)",
            [(a, account_kind(a)) for a in sorted(touched)],
        )
    conn.executemany(
        "INSERT INTO entries(txn_id, from_account, to_account, amount_fen) VALUES (?, ?, ?, ?)",
        [
            (txn_id, m.source, m.dest, m.amount_fen)
            for txn_id, (_, moves) in zip(ids, items, strict=True)
            for m in moves
        ],
    )
    return ids, delta


def move_balances(conn: sqlite3.Connection, delta: dict[str, int]) -> None:
    """Add each account's delta to its balance in place (``balance_fen = balance_fen +
    delta``, in account order, a few statements whatever their number) and check every new
    balance (outside the carriable range: ``amount_out_of_range``, and the caller's write
    transaction rolls back)."""
    changed = sorted((a, d) for a, d in delta.items() if d)
    for i in range(0, len(changed), _POST_CHUNK):
        chunk_ = changed[i : i + _POST_CHUNK]
        for account, new in conn.execute(_move_balances_sql(len(chunk_)), [x for ad in chunk_ for x in ad]):
            check_balance(account, int(new) - delta[account], int(new))


@functools.lru_cache(maxsize=16)
def _move_balances_sql(n: int) -> str:
    """One UPDATE adding each (account, delta) pair to its balance, returning the new ones."""
    pairs = ", ".join(["(?, ?)"] * n)
    return (
        "UPDATE accounts SET balance_fen = accounts.balance_fen + v.column2 "
        f"FROM (VALUES {pairs}) AS v WHERE accounts.id = v.column1 "
        "RETURNING accounts.id, accounts.balance_fen"
    )


def subsidy_by_year(conn: sqlite3.Connection, holder_id: str) -> dict[int, int]:
    """The holder's subsidy purses with a non-zero balance, by year."""
    out: dict[int, int] = {}
    for account_id, fen in conn.execute(
        f"SELECT id, balance_fen FROM accounts a WHERE {is_subsidy_purse_sql('a.id', '?')} "
        "AND balance_fen <> 0",
        (holder_id, holder_id),
    ):
        year = parse_purse(account_id)[2]
        if year is not None:
            out[year] = int(fen)
    return out


def balance(conn: sqlite3.Connection, account_id: str) -> int:
    row = conn.execute("SELECT balance_fen FROM accounts WHERE id = ?", (account_id,)).fetchone()
    return int(row[0]) if row else 0


def balances(conn: sqlite3.Connection, account_ids: Iterable[str]) -> dict[str, int]:
    ids = list(account_ids)
    out = dict.fromkeys(ids, 0)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT id, balance_fen FROM accounts WHERE id IN ({marks})", chunk):
            out[row[0]] = int(row[1])
    return out


@dataclass(frozen=True)
class Violation:
    code: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


def check(conn: sqlite3.Connection) -> list[Violation]:
    """Verify the ledger invariants; an empty list means all hold.

    * every amount is a positive integer (STRICT + CHECK make others impossible; checked anyway)
    * the balances of all accounts sum to zero
    * each stored balance equals (sum in − sum out) of its entries
    * no purse is negative unless the holder has a recorded overdraft and is blocked
    * no sale is applied twice (one txn per applied sale, one sale per txn)

    The business invariants built on the ledger (sales, settlements, clearings,
    allocations, no withdrawal) are :mod:`server.closing.audit`'s; :func:`server.closing.check.check`
    runs both.
    """
    out: list[Violation] = []
    bad = conn.execute(
        "SELECT count(*) FROM entries WHERE typeof(amount_fen) <> 'integer' OR amount_fen <= 0"
    ).fetchone()[0]
    if bad:
        out.append(Violation("non_integer_or_nonpositive_entry", f"{bad} entries"))
    total = conn.execute("SELECT coalesce(sum(balance_fen), 0) FROM accounts").fetchone()[0]
    if total != 0:
        out.append(Violation("ledger_sum_nonzero", f"sum of balances = {total} fen"))
    for row in conn.execute(
        """
        WITH flows AS (
            SELECT to_account AS id, amount_fen AS amt FROM entries
            UNION ALL
            SELECT from_account, -amount_fen FROM entries
        ), derived AS (SELECT id, sum(amt) AS bal FROM flows GROUP BY id)
        SELECT a.id, a.balance_fen, coalesce(d.bal, 0) AS derived
        FROM accounts a LEFT JOIN derived d ON d.id = a.id
        WHERE a.balance_fen <> coalesce(d.bal, 0)
        """
    ):
        out.append(Violation("balance_mismatch", f"{row[0]}: stored {row[1]}, entries say {row[2]}"))
    for row in conn.execute(
        """
        SELECT a.id, a.balance_fen FROM accounts a
        WHERE a.kind IN ('subsidy_purse', 'self_purse') AND a.balance_fen < 0
          AND NOT EXISTS (
            SELECT 1 FROM sales s
            WHERE s.overdraft_fen > 0 AND (a.id = _SELF_OF_SALE OR _SUBSIDY_OF_SALE))
        """.replace("_SUBSIDY_OF_SALE", is_subsidy_purse_sql("a.id", "s.holder_id")).replace(
            "_SELF_OF_SALE", purse_id_sql("s.holder_id", "self")
        )
    ):
        out.append(Violation("negative_purse", f"{row[0]}: {row[1]} fen without an overdraft"))
    dup = conn.execute(
        """
        SELECT count(*) FROM (
            SELECT txn_id FROM sales WHERE txn_id IS NOT NULL GROUP BY txn_id HAVING count(*) > 1
        )
        """
    ).fetchone()[0]
    if dup:
        out.append(Violation("sale_applied_twice", f"{dup} txns shared by several sales"))
    dup_refs = conn.execute(
        """
        SELECT count(*) FROM (
            SELECT ref FROM txns WHERE kind = 'sale' GROUP BY ref HAVING count(*) > 1
        )
        """
    ).fetchone()[0]
    if dup_refs:
        out.append(Violation("sale_applied_twice", f"{dup_refs} sale refs posted twice"))
    return out


def ledger_sum(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(balance_fen), 0) FROM accounts").fetchone()[0])


# Appended by the registry: where an approved self-purse refund goes (a leaver's own bank
# account, 建行储蓄卡; never cash). Kept apart from ``bank:topup`` so refunds paid out
# reconcile on their own against the bank's statement.
SELF_REFUND_BANK = "bank:self_refund"
