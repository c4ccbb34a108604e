"""Applying terminal sales to the ledger, each at most once.

A sale is identified by ``(terminal_id, seq)`` and carries a ``uuid``. The first time the
server sees it, it decides — applied (entries from the purses to the canteen's payable,
subsidy first) or rejected (with a reason) — and stores the decision in ``sales``. Every
later copy gets that first decision back as ``duplicate``; a copy whose uuid differs from
the stored one (a terminal that lost its journal and reused numbers) is refused as
``sale_id_conflict`` and changes nothing.

Quarantine. A sale whose terminal and card check out but which no honest terminal could
have made (:func:`server.sales.plausibility.check_sale`: above a limit, at a wrong price,
dated in the future …) moves no purse: its row keeps the key with status ``rejected`` and
the quarantine reason, it is recorded in ``quarantined_sales`` for an admin, and the
terminal is answered ``quarantined`` (final for it: the sale leaves its outbox). An admin
who accepts it has it applied by :meth:`SaleApplier.apply_accepted`, once
(:mod:`server.sales.quarantine`).

Closed periods. A purse-paid sale dated in a quarter that is already settled is applied
like any other (the diner ate; the canteen is owed) and also recorded in ``late_sales``:
the next statement carries it as a dated adjustment line. A sale dated before the cutoff
of a year that has already been cleared first takes back, from the year-end refund its
holder's subsidy went to (``clearing_lines``), what the holder's subsidy would have paid
had the sale arrived in time; only the rest is paid from the purses now, subsidy first
(``cleared_subsidy_fen`` records the part that came from the refund; it is included in
``subsidy_fen``).

:class:`SaleApplier` works inside one write transaction that will record one delta
version: every result it returns carries the cardholder's balance *as of the end of that
version*, so a terminal that applies "balance at version v" never sees a half-state.
"""

from __future__ import annotations

import bisect
import functools
import json
import operator
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from server.books import ledger
from server.books.periods import year_of_ms
from server.books.settlement_rules import take_in_order
from server.books.spend import split_payment
from server.downstream.changes import holder_change_from, meals_of_day
from server.infra.db import chunks
from server.registry import pins
from server.sales import takings
from server.sales.double_spend import note_sale_credential
from server.sales.plausibility import Implausible, check_sale
from server.sales.sale_facts import FactsBook
from shared.protocol import Sale, SaleResult
from shared.protocol.messages import Balance

_COLUMNS = (
    "terminal_id",
    "seq",
    "uuid",
    "status",
    "reason",
    "card_id",
    "holder_id",
    "unit_id",
    "canteen_id",
    "amount_fen",
    "subsidy_fen",
    "self_fen",
    "overdraft_fen",
    "method",
    "kind",
    "meal_period",
    "visitor",
    "offline",
    "occurred_at_ms",
    "received_at_ms",
    "txn_id",
    "balance_subsidy_fen",
    "balance_self_fen",
    "balance_version",
    "balance_subsidy_year",
    "balance_next_subsidy_fen",
    "balance_expired_subsidy_fen",
    "items_json",
    "cleared_subsidy_fen",
)
_INSERT = f"INSERT INTO sales({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_ROW_VALUES = operator.itemgetter(*_COLUMNS)  # a row dict's values in _COLUMNS order
# a batch's cards: their holders, blocked flags, and purses (self and every year's subsidy)
_PURSES_OF_CARDS = (
    "SELECT c.card_id, h.id, h.unit_id, h.blocked, a.id, a.balance_fen "
    "FROM cards c JOIN holders h ON h.id = c.holder_id "
    f"LEFT JOIN accounts a ON (a.id = {ledger.purse_id_sql('h.id', 'self')} "
    f"OR {ledger.is_subsidy_purse_sql('a.id', 'h.id')}) "
    "WHERE c.card_id IN ({marks})"
)


@dataclass
class _Holder:
    """A cardholder as this transaction sees it: the purses' balances read once, then moved
    here by every sale decided (their postings are written by :meth:`SaleApplier.finish`)."""

    holder_id: str
    unit_id: str
    blocked: bool
    purses: dict[str, int]

    def balance(self, account: str) -> int:
        return self.purses.get(account, 0)

    def expired(self, year: int) -> int:
        """Earlier years' subsidy (positive purses only), as the delta sends it."""
        total = 0
        for account, fen in self.purses.items():
            if fen > 0:
                _, purse, purse_year = ledger.parse_purse(account)
                if purse == "subsidy" and purse_year is not None and purse_year < year:
                    total += fen
        return total


def stored_balance(row: dict[str, Any] | sqlite3.Row) -> Balance | None:
    """The holder's balance a stored sale or reversal row carries (:func:`stamp_balances`
    put it there), or None for a row that moved no holder's purses."""
    if row["balance_version"] is None:
        return None
    return Balance(
        row["balance_subsidy_fen"],
        row["balance_self_fen"],
        row["balance_version"],
        row["balance_subsidy_year"],
        row["balance_next_subsidy_fen"],
        row["balance_expired_subsidy_fen"],
    )


def _result(row: dict[str, Any] | sqlite3.Row, status: str) -> SaleResult:
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
        balance=stored_balance(row),
    )


def stamp_balances(rows: Iterable[dict[str, Any]], changes: dict[str, dict[str, Any]], version: int) -> None:
    """Give each row of a holder in ``changes`` that holder's balance at the end of the txn
    (delta ``version``): what its result, and any duplicate's, carries."""
    for row in rows:
        change = changes.get(row["holder_id"]) if row["holder_id"] else None
        if change is not None:
            row["balance_subsidy_fen"] = change["subsidy_fen"]
            row["balance_self_fen"] = change["self_fen"]
            row["balance_version"] = version
            row["balance_subsidy_year"] = change["subsidy_year"]
            row["balance_next_subsidy_fen"] = change["next_subsidy_fen"]
            row["balance_expired_subsidy_fen"] = change["expired_subsidy_fen"]


def record_late(conn: sqlite3.Connection, table: str, late: list[tuple[str, int, str, int, int]]) -> None:
    """Record in ``table`` (``late_sales`` or ``late_reversals``, alike) the (terminal, seq,
    canteen, time, amount) of what was dated in a settled quarter: the next statement's
    adjustment lines."""
    if late:
        conn.executemany(
            f"INSERT INTO {table}(terminal_id, seq, canteen_id, occurred_at_ms, amount_fen) "
            "VALUES (?, ?, ?, ?, ?)",
            late,
        )


@dataclass(frozen=True)
class ClosedPeriods:
    """What is closed when a batch is applied: settled quarters and cleared years."""

    closed_through_ms: int | None  # end of the last settled quarter
    clearings: tuple[tuple[int, int], ...]  # (cutoff_ms, year), ascending

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> ClosedPeriods:
        # one statement (a round trip per ingest transaction on PostgreSQL): the end of the
        # last settled quarter (year NULL), then the clearings in cutoff order
        rows = conn.execute(
            "SELECT 0 AS part, max(end_ms), NULL FROM settlement_periods "
            "UNION ALL SELECT 1, cutoff_ms, year FROM clearings ORDER BY 1, 2"
        ).fetchall()
        clearings = tuple((int(r[1]), int(r[2])) for r in rows[1:])
        return cls(rows[0][1], clearings)

    @classmethod
    def from_heads(
        cls, closed_through_ms: int | None, last_cutoff_ms: int | None, occurred_at_ms: int
    ) -> ClosedPeriods | None:
        """What :meth:`load` gives for a sale at ``occurred_at_ms``, from the end of the last
        settled quarter and the latest clearing's cutoff alone (:data:`PERIOD_HEADS`, read
        where other reads are made): no clearing takes a sale at or after its latest cutoff.
        None for an earlier sale: :meth:`load` then."""
        if last_cutoff_ms is not None and occurred_at_ms < last_cutoff_ms:
            return None
        return cls(closed_through_ms, ())

    def settled(self, occurred_at_ms: int) -> bool:
        return self.closed_through_ms is not None and occurred_at_ms < self.closed_through_ms

    def clearing_for(self, occurred_at_ms: int) -> int | None:
        """The cleared year whose clearing took the subsidy a sale at this time would have used."""
        i = bisect.bisect_right(self.clearings, (occurred_at_ms, 1 << 62))
        return self.clearings[i][1] if i < len(self.clearings) else None


# what :meth:`ClosedPeriods.from_heads` needs, as trusted SQL columns (no table of their own):
# the end of the last settled quarter, the latest clearing's cutoff (both None if none)
PERIOD_HEADS = ("(SELECT max(end_ms) FROM settlement_periods)", "(SELECT max(cutoff_ms) FROM clearings)")


class SaleApplier:
    """Applies sales inside the caller's write txn; :meth:`finish` writes the sale rows."""

    def __init__(
        self, conn: sqlite3.Connection, now_ms: int, version: int, accounts: ledger.AccountCache | None = None
    ) -> None:
        self.conn = conn
        self.now_ms = now_ms
        self.version = version
        self.changes: dict[str, dict[str, Any]] = {}
        self.extra_changes: list[dict[str, Any]] = []  # e.g. a QR credential revoked for a double spend
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0
        self.quarantined = 0
        self.revoked_refused: list[str] = []  # sale ids a revoked terminal signed after its revocation
        self._facts = FactsBook(conn, now_ms)
        self._quarantine: list[tuple[Sale, Implausible]] = []
        # the caller commits or rolls back the cache with its transaction
        self._accounts = accounts if accounts is not None else ledger.AccountCache()
        # what this txn has read: cards' holders (None: unknown card) with their purses as
        # moved by the sales decided so far, and the sale keys and uuids already stored
        self._cards: dict[str, str | None] = {}
        self._holders: dict[str, _Holder] = {}
        self._stored: dict[tuple[str, int], Any] = {}  # key -> stored row, or None
        self._uuids_checked: set[str] = set()
        self._stored_uuids: set[str] = set()
        self._postings: list[tuple[dict[str, Any], ledger.Posting]] = []  # written by finish()
        self._year = year_of_ms(now_ms)
        self._pending: dict[tuple[str, int], dict[str, Any]] = {}
        self._pending_uuids: set[str] = set()
        self._late: list[tuple[str, int, str, int, int]] = []
        self._results: list[SaleResult | tuple[tuple[str, int], str]] = []
        self._unmoved: dict[str, int] | None = None  # balances recorded, not yet moved
        self._read_accounts: set[str] = set()  # purses read: they exist (see post_own)
        self._finished = False
        self._period_heads: tuple[int | None, int | None] | None = None  # see know_periods

    def know_periods(self, closed_through_ms: int | None, last_cutoff_ms: int | None) -> None:
        """The :data:`PERIOD_HEADS` the caller read in this transaction: a sale dated at or
        after the latest clearing's cutoff is decided on them, without reading
        :attr:`periods` (:meth:`ClosedPeriods.from_heads`)."""
        self._period_heads = (closed_through_ms, last_cutoff_ms)

    def _periods_for(self, occurred_at_ms: int) -> ClosedPeriods:
        heads = self._period_heads
        if heads is not None:
            recent = ClosedPeriods.from_heads(*heads, occurred_at_ms)
            if recent is not None:
                return recent
        return self.periods

    @functools.cached_property
    def periods(self) -> ClosedPeriods:
        """What is closed, read when the first card sale is decided (a transaction of
        statuses alone never asks): this transaction holds the write lock, so it is what
        holds for every sale it decides."""
        return ClosedPeriods.load(self.conn)

    # -- reading ahead --------------------------------------------------------------------

    def know_terminals(self, created_at_ms: dict[str, int]) -> None:
        """Terminals' creation times the caller read in this transaction (see
        :meth:`server.sales.sale_facts.FactsBook.know_terminals`)."""
        self._facts.know_terminals(created_at_ms)

    def prefetch(self, sales: Iterable[Sale]) -> None:
        """Read what deciding these sales needs in a few queries, not a few per sale: which
        are stored already (by key or by uuid), their cards' holders with their purses, and
        their terminals' and canteens' facts for the plausibility check.
        :meth:`apply` reads for itself what was not read ahead (a batch of one)."""
        sales = list(sales)
        self._load_stored({(s.terminal_id, s.seq) for s in sales}, {s.uuid for s in sales})
        self._load_cards({s.card_id for s in sales if s.method != "ecny"})
        self._facts.prefetch({s.terminal_id for s in sales}, {s.canteen_id for s in sales})

    def _load_stored(self, keys: set[tuple[str, int]], uuids: set[str]) -> None:
        """The sales stored under these keys, and which of these uuids are stored (under any
        key): one query per 400 of each (``via`` tells which part found a row), each part
        read by its own index (a round trip per query on PostgreSQL)."""
        key_chunks = list(chunks(sorted(keys - self._stored.keys())))
        uuid_chunks = list(chunks(sorted(uuids - self._uuids_checked)))
        for i in range(max(len(key_chunks), len(uuid_chunks))):
            parts: list[str] = []
            params: list[Any] = []
            if i < len(key_chunks):
                chunk = key_chunks[i]
                self._stored.update(dict.fromkeys(chunk))
                pairs = ", ".join(["(?, ?)"] * len(chunk))
                parts.append(
                    f"SELECT s.*, 'key' AS via FROM sales s JOIN (VALUES {pairs}) AS v "
                    "ON s.terminal_id = v.column1 AND s.seq = v.column2"
                )
                params += [x for key in chunk for x in key]
            if i < len(uuid_chunks):
                chunk_ = uuid_chunks[i]
                self._uuids_checked.update(chunk_)
                marks = ", ".join("?" * len(chunk_))
                parts.append(f"SELECT s.*, 'uuid' AS via FROM sales s WHERE s.uuid IN ({marks})")
                params += chunk_
            for row in self.conn.execute(" UNION ALL ".join(parts), params):
                if row["via"] == "key":
                    self._stored[(row["terminal_id"], row["seq"])] = row
                else:
                    self._stored_uuids.add(row["uuid"])

    def _load_cards(self, cards: set[str]) -> None:
        fresh: set[str] = set()  # holders first read now (one already read keeps its moved purses)
        for chunk in chunks(sorted(cards - self._cards.keys())):
            self._cards.update(dict.fromkeys(chunk))
            marks = ", ".join("?" * len(chunk))
            for card_id, holder_id, unit_id, blocked, account, fen in self.conn.execute(
                _PURSES_OF_CARDS.format(marks=marks), chunk
            ):
                self._cards[card_id] = holder_id
                if holder_id not in self._holders:
                    self._holders[holder_id] = _Holder(holder_id, unit_id, bool(blocked), {})
                    fresh.add(holder_id)
                if holder_id in fresh and account is not None:
                    self._holders[holder_id].purses[account] = int(fen)
                    self._read_accounts.add(account)

    def _holder_of(self, card_id: str) -> _Holder | None:
        if card_id not in self._cards:
            self._load_cards({card_id})
        holder_id = self._cards[card_id]
        return self._holders[holder_id] if holder_id is not None else None

    # -- one sale -----------------------------------------------------------------------

    def apply(self, sale: Sale, terminal_canteen: str, revoked_at_ms: int | None = None) -> int:
        """Decide one sale; returns its slot in :meth:`finish`'s result list. ``revoked_at_ms``:
        when the sending terminal was revoked (:func:`server.registry.terminals.revoked_at`);
        a new sale it dated at or after that is rejected ``terminal_revoked``, not quarantined."""
        self._still_deciding()
        slot = len(self._results)
        key = (sale.terminal_id, sale.seq)
        earlier = self._pending.get(key)
        if earlier is not None:
            same = earlier["uuid"] == sale.uuid
            self._count("duplicate" if same else "rejected")
            self._results.append((key, "duplicate") if same else self._reject(sale, "sale_id_conflict"))
            return slot
        if key not in self._stored or sale.uuid not in self._uuids_checked:
            self._load_stored({key}, {sale.uuid})  # read ahead by prefetch(), or now
        row = self._stored[key]
        if row is not None:
            if row["uuid"] != sale.uuid:
                self._count("rejected")
                self._results.append(self._reject(sale, "sale_id_conflict"))
            else:
                self._count("duplicate")
                self._results.append(_result(row, "duplicate"))
            return slot
        if sale.uuid in self._stored_uuids or sale.uuid in self._pending_uuids:  # another sale's uuid
            self._count("rejected")
            self._results.append(self._reject(sale, "sale_id_conflict"))
            return slot

        if revoked_at_ms is not None and sale.occurred_at_ms >= revoked_at_ms:
            row_, held = (
                {**_base_row(sale, self.now_ms), "status": "rejected", "reason": "terminal_revoked"},
                False,
            )
            self.revoked_refused.append(sale.sale_id)
        else:
            row_, held = self._decide(sale, terminal_canteen)
        self._keep(sale, row_)
        status = "quarantined" if held else row_["status"]
        self._count(status)
        self._results.append((key, status))
        return slot

    def apply_accepted(self, sale: Sale, terminal_canteen: str) -> int:
        """Apply a quarantined sale an admin accepted (its old row already removed by the
        caller, in the same txn): the normal apply path without the plausibility check.
        Returns its slot in :meth:`finish`'s result list."""
        self._still_deciding()
        row_, _ = self._decide(sale, terminal_canteen, check=False)
        self._keep(sale, row_)
        self._count(row_["status"])
        self._results.append(((sale.terminal_id, sale.seq), row_["status"]))
        return len(self._results) - 1

    def _still_deciding(self) -> None:
        """Refuse a sale once the postings are written (its own would be neither recorded
        nor moved), before anything of it is decided."""
        if self._unmoved is not None or self._finished:
            raise RuntimeError("a sale decided after post_own() or finish()")

    def _keep(self, sale: Sale, row_: dict[str, Any]) -> None:
        if row_["status"] == "applied" and sale.credential:  # QR code / SUN counter used twice?
            self.extra_changes += note_sale_credential(self.conn, sale, row_["holder_id"], self.now_ms)
        self._pending[(sale.terminal_id, sale.seq)] = row_
        self._pending_uuids.add(sale.uuid)

    def _decide(
        self, sale: Sale, terminal_canteen: str, *, check: bool = True
    ) -> tuple[dict[str, Any], bool]:
        """The sale's row, and whether it was held back (quarantined) rather than decided."""
        row = _base_row(sale, self.now_ms)
        if sale.canteen_id != terminal_canteen:
            return {**row, "status": "rejected", "reason": "canteen_mismatch"}, False
        if sale.method == "ecny":  # settled by the gateway: recorded for totals, no purse moves
            if check and (held := self._hold(sale, row, None)) is not None:
                return held, True
            self._postings.append((row, ledger.Posting("sale", (), sale.sale_id, "ecny")))
            return row, False
        sale_year = year_of_ms(sale.occurred_at_ms)  # its year's subsidy only (第十条 年末清零)
        holder = self._holder_of(sale.card_id)
        if holder is None:
            return {**row, "status": "rejected", "reason": "card_unknown"}, False
        holder_id, unit_id = holder.holder_id, holder.unit_id
        subsidy_purse, self_purse = ledger.subsidy_purse(holder_id, sale_year), ledger.self_purse(holder_id)
        subsidy_balance, self_balance = holder.balance(subsidy_purse), holder.balance(self_purse)
        if check:
            held = self._hold(sale, row, unit_id, holder_id)
            if held is not None:
                return held, True
        if sale.pin_approval is not None:  # used once: a second sale naming it is held back
            pins.use_approval(self.conn, sale.pin_approval, sale.sale_id)
        payable = ledger.canteen_payable(sale.canteen_id)
        moves: list[ledger.Move] = []
        cleared = 0
        rest = sale.amount_fen
        periods = self._periods_for(sale.occurred_at_ms)
        year = periods.clearing_for(sale.occurred_at_ms)
        if year is not None:
            for account, fen in self._claw_back(year, holder_id, rest):
                moves.append(ledger.Move(account, payable, fen))
                cleared += fen
            rest -= cleared
        split = split_payment(subsidy_balance, self_balance, rest)
        moves.append(ledger.Move(subsidy_purse, payable, split.subsidy_fen))
        moves.append(ledger.Move(self_purse, payable, split.self_fen))
        # posted by finish(), with the batch's others; the next sale of this holder in the
        # batch is split over the purses as this one leaves them
        self._postings.append((row, ledger.Posting("sale", tuple(moves), sale.sale_id)))
        holder.purses[subsidy_purse] = subsidy_balance - split.subsidy_fen
        holder.purses[self_purse] = self_balance - split.self_fen
        if periods.settled(sale.occurred_at_ms):
            self._late.append(
                (sale.terminal_id, sale.seq, sale.canteen_id, sale.occurred_at_ms, sale.amount_fen)
            )
        self.changes[holder_id] = {}  # filled in finish(): the state at the end of the txn
        row.update(
            holder_id=holder_id,
            unit_id=unit_id,
            subsidy_fen=cleared + split.subsidy_fen,
            self_fen=split.self_fen,
            overdraft_fen=split.overdraft_fen,
            cleared_subsidy_fen=cleared,
        )
        return row, False

    def _hold(
        self, sale: Sale, row: dict[str, Any], holder_unit_id: str | None, holder_id: str | None = None
    ) -> dict[str, Any] | None:
        """The row of a sale held back as implausible (no purse moves), or None to go on;
        a held card sale's row names its holder (``holder_id``) and unit. The row keeps the
        sale's key, so every copy is answered ``duplicate``."""
        problem = check_sale(sale, self._facts.facts(sale, holder_unit_id))
        if problem is None:
            return None
        self._quarantine.append((sale, problem))
        held = {**row, "status": "rejected", "reason": problem.code}
        if holder_id is not None:
            held.update(holder_id=holder_id, unit_id=holder_unit_id)
        return held

    def _claw_back(self, year: int, holder_id: str, amount_fen: int) -> list[tuple[str, int]]:
        """Take up to ``amount_fen`` back from the holder's refunds of the ``year`` clearing,
        oldest-attributed credit first; returns (refund account, fen) parts."""
        lines = self.conn.execute(
            "SELECT unit_id, refund_account, amount_fen - clawed_back_fen FROM clearing_lines "
            "WHERE year = ? AND holder_id = ? AND amount_fen > clawed_back_fen ORDER BY rank DESC",
            (year, holder_id),
        ).fetchall()
        parts, _ = take_in_order(amount_fen, [((r[0], r[1]), r[2]) for r in lines])
        self.conn.executemany(
            "UPDATE clearing_lines SET clawed_back_fen = clawed_back_fen + ? "
            "WHERE year = ? AND holder_id = ? AND unit_id = ?",
            [(fen, year, holder_id, unit_id) for (unit_id, _), fen in parts],
        )
        return [(account, fen) for (_, account), fen in parts]

    # -- the end of the txn ---------------------------------------------------------------

    def post_own(self) -> None:
        """Write, before :meth:`finish`, what only this transaction's key locks guard (a
        shared ingest transaction, :func:`server.infra.db.ingest_txn`, calls it before it
        takes the tail lock): the sales' ledger txns, their accounts and entries, and the
        balances of the cardholders' purses (each holder locked by this transaction).
        :meth:`finish` then moves only the balances every transaction shares (the canteens'
        payables, clearing refunds), in account order, and writes the version-stamped
        sale rows. Called once, after the last sale is decided."""
        if self._unmoved is not None or self._finished:
            raise RuntimeError("post_own() called twice or after finish()")
        # the accounts that exist are not inserted again: an insert that meets a payable
        # another transaction is moving under its tail lock would wait for that commit
        self._accounts.seen(self._read_accounts)
        moved = {a for _, p in self._postings for m in p.moves if m.amount_fen for a in (m.source, m.dest)}
        ledger.note_existing(self.conn, self._accounts, moved)
        delta = self._record()
        ledger.move_balances(self.conn, {a: d for a, d in delta.items() if ledger.is_purse(a)})
        self._unmoved = {a: d for a, d in delta.items() if not ledger.is_purse(a)}

    def _record(self) -> dict[str, int]:
        """Record the decided sales' ledger txns and entries; returns the balances to move."""
        postings = [p for _, p in self._postings]
        txn_ids, delta = ledger.record_many(self.conn, postings, self.now_ms, accounts=self._accounts)
        for (row, _), txn_id in zip(self._postings, txn_ids, strict=True):
            row["txn_id"] = txn_id
        return delta

    def finish(self) -> list[SaleResult]:
        """Write the new sale rows with the final balances; return every result in order."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        # not posted ahead (one writer; a quarantined sale accepted): every balance now
        unmoved = self._record() if self._unmoved is None else self._unmoved
        ledger.move_balances(self.conn, unmoved)
        for holder_id in self.changes:  # the balances the ledger now holds (read, then moved here)
            h = self._holders[holder_id]
            self.changes[holder_id] = holder_change_from(
                holder_id,
                h.unit_id,
                h.blocked,
                h.balance(ledger.subsidy_purse(holder_id, self._year)),
                h.balance(ledger.self_purse(holder_id)),
                self._year,
                h.balance(ledger.subsidy_purse(holder_id, self._year + 1)),
                h.expired(self._year),
            )
        stamp_balances(self._pending.values(), self.changes, self.version)
        self.conn.executemany(_INSERT, [_ROW_VALUES(r) for r in self._pending.values()])
        takings.add(self.conn, self._pending.values())  # the dashboard's sums, in this same txn
        if self._quarantine:
            self.conn.executemany(
                "INSERT INTO quarantined_sales(terminal_id, seq, canteen_id, reason, detail, amount_fen, "
                "occurred_at_ms, quarantined_at_ms, sale_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        s.terminal_id,
                        s.seq,
                        s.canteen_id,
                        p.code,
                        p.detail[:500],
                        s.amount_fen,
                        s.occurred_at_ms,
                        self.now_ms,
                        json.dumps(s.to_dict(), ensure_ascii=False, separators=(",", ":")),
                    )
                    for s, p in self._quarantine
                ],
            )
        for holder_id, meals in meals_of_day(self.conn, self._meal_days()).items():
            self.changes[holder_id]["meals"] = meals
        record_late(self.conn, "late_sales", self._late)
        out: list[SaleResult] = []
        for item in self._results:
            if isinstance(item, SaleResult):
                out.append(item)
            else:
                key, status = item
                out.append(_result(self._pending[key], status))
        return out

    def _meal_days(self) -> dict[str, int]:
        """Holders with a meal applied in this txn → the time of their latest one."""
        latest: dict[str, int] = {}
        for row in self._pending.values():
            if row["status"] == "applied" and row["kind"] == "meal" and row["holder_id"]:
                h = row["holder_id"]
                latest[h] = max(latest.get(h, 0), row["occurred_at_ms"])
        return latest

    @property
    def decided_keys(self) -> list[tuple[str, int]]:
        """(terminal, seq) of the sales first stored in this txn (a reversal may wait for one)."""
        return list(self._pending)

    @property
    def held(self) -> list[tuple[str, str, str]]:
        """The sales quarantined in this txn: (sale id, reason code, detail)."""
        return [(s.sale_id, p.code, p.detail) for s, p in self._quarantine]

    @property
    def quarantined_terminals(self) -> set[str]:
        """Terminals with a sale quarantined in this txn."""
        return {s.terminal_id for s, _ in self._quarantine}

    def _count(self, status: str) -> None:
        if status == "applied":
            self.applied += 1
        elif status == "duplicate":
            self.duplicates += 1
        elif status == "quarantined":
            self.quarantined += 1
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
        "balance_subsidy_year": None,
        "balance_next_subsidy_fen": 0,
        "balance_expired_subsidy_fen": 0,
        "items_json": json.dumps([i.__dict__ for i in sale.items]) if sale.items else None,
        "cleared_subsidy_fen": 0,
    }
