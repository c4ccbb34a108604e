"""The terminal's SQLite store: the cache, the sale journal and the outbox.

Opened with WAL and ``synchronous=FULL``: when :meth:`Store.record_sale` returns, the sale
and its outbox row are on disk together, so a power cut after the diner heard "paid" loses
nothing, and a power cut before it leaves no half-sale. Each thread opens its own
:class:`Store` on the same file.

**Announcing.** A sale is journaled with ``announced = 0``; the terminal then tells the
diner ("支付成功") and marks it announced. The outbox sends only announced sales (it stops
at the first unannounced one), so the server never applies a sale the diner was not told
about. A sale journaled but not announced when the power went — the diner heard nothing —
is announced at the next start ("断电前最后一笔交易已成功"), before anything is sent: every
journaled sale is announced exactly once or more, never zero times. The announced mark is
written without an fsync (``synchronous=NORMAL``, on a second connection kept at that level:
:meth:`Store.relaxed_write`): losing it in a power cut only means announcing that sale again
after the restart, never a lost or an unannounced sale. In WAL mode the next durable commit
(on any connection) fsyncs the log, relaxed frames before it included.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlite_utils import Database

from shared.clock import china_day
from shared.errors import DomainError
from shared.ids import uuid7_hex
from shared.private_files import ensure_private_sqlite
from shared.protocol import Item, Sale, SaleResult, canonical_json
from shared.protocol.messages import (
    Balance,
    CanteenChange,
    CardChange,
    Change,
    FaceChange,
    HolderChange,
    QrKeyChange,
    SettingsChange,
)
from shared.spend_order import subsidy_for_year
from shared.sqlite_txn import write_txn
from terminal import face_cache
from terminal.authorize import CardState
from terminal.qr_verify import apply_qr_key_change, clear_qr_keys
from terminal.schema import MIGRATIONS

__all__ = ["CardState", "Store"]

_MAX_SEQ = 2**62
# a journal row (as ``journal``) this terminal has reversed (冲正, terminal.reversals): no
# longer spending, no meal. NOT EXISTS looks it up by the unique sale_seq; NOT IN listed
# every reversal the terminal ever made, at every read
_REVERSED = "EXISTS (SELECT 1 FROM reversals r WHERE r.sale_seq = journal.seq AND r.status <> 'rejected')"
_SET_META = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
# two values in one statement: a delta's version and the sync time (apply_changes)
_SET_TWO_METAS = (
    "INSERT INTO meta(key, value) VALUES (?, ?), (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)

# the card as cached, with its holder's purses and unconfirmed spending (Store.card_state);
# ``extra``: more columns read in the same statement (Store.card_state_and_floor)
_CARD_STATE = f"""
SELECT c.card_id, c.status, h.holder_id, h.unit_id, h.subsidy_fen, h.self_fen,
       h.blocked, h.version, h.subsidy_year, h.next_subsidy_fen,
       h.expired_subsidy_fen, p.fen, p.n{{extra}}
FROM cards c JOIN holders h ON h.holder_id = c.holder_id,
     (SELECT coalesce(sum(amount_fen), 0) AS fen, count(*) AS n
      FROM journal INDEXED BY journal_holder_pending
      WHERE holder_id = (SELECT holder_id FROM cards WHERE card_id = :card)
        AND status = 'pending' AND NOT {_REVERSED}) p
WHERE c.card_id = :card
"""
# the latest sale time in the journal and the unsent sales (Store.journal_floor_and_unsent)
_LATEST_SALE, _UNSENT = "(SELECT max(occurred_at_ms) FROM journal)", "(SELECT count(*) FROM outbox)"
_FLOOR_AND_UNSENT = f"SELECT {_LATEST_SALE}, {_UNSENT}"
_CARD_STATE_ONLY = _CARD_STATE.format(extra="")
_CARD_STATE_AND_FLOOR = _CARD_STATE.format(extra=f", {_LATEST_SALE} AS latest, {_UNSENT} AS unsent")


def _card_from_row(row: sqlite3.Row, now_ms: int | None) -> CardState:
    """A :data:`_CARD_STATE` row as the card's state for a sale at ``now_ms``. Its columns
    by position: a ``sqlite3.Row`` looks a name up by comparing it with every column's."""
    card_id, status, holder_id, unit_id, subsidy_fen, self_fen, blocked, version = row[:8]
    subsidy_year, next_subsidy_fen, expired_subsidy_fen, fen, n = row[8:13]
    year = subsidy_year if now_ms is None else china_day(now_ms).year
    subsidy, expired = subsidy_for_year(
        subsidy_fen, subsidy_year, next_subsidy_fen or 0, year, expired_subsidy_fen or 0
    )
    return CardState(
        card_id=card_id,
        card_status=status,
        holder_id=holder_id,
        unit_id=unit_id,
        subsidy_fen=subsidy,
        expired_subsidy_fen=expired,
        self_fen=self_fen,
        blocked=bool(blocked),
        version=version,
        unconfirmed_fen=int(fen),
        unconfirmed_count=int(n),
    )


_UPSERT_HOLDERS = """
INSERT INTO holders(holder_id, unit_id, subsidy_fen, self_fen, blocked, version,
                    meals_day, meals_json, subsidy_year, next_subsidy_fen,
                    expired_subsidy_fen)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(holder_id) DO UPDATE SET
    unit_id = excluded.unit_id,
    blocked = excluded.blocked,
    subsidy_fen = CASE WHEN excluded.version >= holders.version
                  THEN excluded.subsidy_fen ELSE holders.subsidy_fen END,
    self_fen = CASE WHEN excluded.version >= holders.version
               THEN excluded.self_fen ELSE holders.self_fen END,
    subsidy_year = CASE WHEN excluded.version >= holders.version
                   THEN excluded.subsidy_year ELSE holders.subsidy_year END,
    next_subsidy_fen = CASE WHEN excluded.version >= holders.version
                       THEN excluded.next_subsidy_fen ELSE holders.next_subsidy_fen END,
    expired_subsidy_fen = CASE WHEN excluded.version >= holders.version
                     THEN excluded.expired_subsidy_fen ELSE holders.expired_subsidy_fen END,
    version = max(excluded.version, holders.version),
    meals_json = CASE WHEN excluded.meals_day >= coalesce(holders.meals_day, '')
                 THEN excluded.meals_json ELSE holders.meals_json END,
    meals_day = CASE WHEN excluded.meals_day >= coalesce(holders.meals_day, '')
                THEN excluded.meals_day ELSE holders.meals_day END
"""
_UPSERT_CARDS = (
    "INSERT INTO cards(card_id, holder_id, status) VALUES (?, ?, ?) "
    "ON CONFLICT(card_id) DO UPDATE SET holder_id = excluded.holder_id, status = excluded.status"
)


# the oldest sale, or reversal the server has not taken, still unsent (Store.oldest_pending_ms):
# from the outbox to the journal (CROSS JOIN keeps that order): the other way round, SQLite
# walks the whole journal by time looking for the first sale still unsent
_OLDEST_PENDING = (
    "SELECT min(t) FROM (SELECT min(j.occurred_at_ms) AS t FROM outbox o "
    "CROSS JOIN journal j ON j.seq = o.seq UNION ALL SELECT min(r.occurred_at_ms) "
    "FROM reversal_outbox o CROSS JOIN reversals r ON r.seq = o.seq WHERE r.status = 'new')"
)
_PENDING_AND_OLDEST = f"SELECT (SELECT count(*) FROM outbox), ({_OLDEST_PENDING})"


@functools.lru_cache(maxsize=8)
def _set_metas_sql(n: int) -> str:
    """The statement that sets ``n`` meta values (Store._write_metas)."""
    values = ", ".join(["(?, ?)"] * n)
    return (
        f"INSERT INTO meta(key, value) VALUES {values} ON CONFLICT(key) DO UPDATE SET value = excluded.value"
    )


def _meta_statement(key: str, value: str | None) -> tuple[str, tuple[str, ...]]:
    """The statement that stores ``value`` under ``key`` (None deletes the key)."""
    if value is None:
        return "DELETE FROM meta WHERE key = ?", (key,)
    return _SET_META, (key, value)


_SETTLE = "UPDATE journal SET status = ?, reason = ? WHERE seq = ? AND uuid = ?"
_DELETE_OUTBOX = "DELETE FROM outbox WHERE seq = ?"
_TAKE_BALANCE = (
    "UPDATE holders SET subsidy_fen = ?, self_fen = ?, version = ?, subsidy_year = ?, "
    "next_subsidy_fen = ?, expired_subsidy_fen = ? WHERE holder_id = ? AND version < ?"
)


def _outcome(result: SaleResult) -> str:
    """What the journal records of an acknowledged sale: a quarantined one is not applied."""
    return "rejected" if result.rejected or result.quarantined else "applied"


def _balance_params(holder_id: str, balance: Balance) -> tuple[Any, ...]:
    return (
        balance.subsidy_fen,
        balance.self_fen,
        balance.version,
        balance.subsidy_year,
        balance.next_subsidy_fen,
        balance.expired_subsidy_fen,
        holder_id,
        balance.version,
    )


class _RulesMark:
    """Whether the rules' source text (the canteens' configs and the terminal settings) may
    have changed, shared by every :class:`Store` of one database in this process: only
    :meth:`Store.apply_changes` writes that text, so a reader that saw ``epoch`` unchanged,
    with no change ``unsettled``, still holds the text it read then (``Terminal.rules``).

    ``unsettled`` is set before the change is written (inside its transaction) and cleared,
    with ``epoch`` moved on, only after that transaction committed: a reader between the
    two reads the text again. A change rolled back leaves it set (reads go to the database,
    as before) until the next change settles."""

    __slots__ = ("epoch", "unsettled")

    def __init__(self) -> None:
        self.epoch = 0
        self.unsettled = False


_RULES_MARKS: dict[str, _RulesMark] = {}  # by database path (the sale and the sync connection)


_JOINED = contextlib.nullcontext()


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        ensure_private_sqlite(self.path)  # cards, keys and sales: the owner's alone
        conn = self._connect("FULL")
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.db = Database(conn, execute_plugins=False)
        self._rules_mark = _RULES_MARKS.setdefault(self.path, _RulesMark())
        # two threads opening a fresh file at once must not both migrate it: hold the write
        # lock while checking (sqlite-utils' own transactions nest as savepoints)
        with write_txn(conn):
            MIGRATIONS.apply(self.db)
        # relaxed writes (relaxed_txn): the same database on a connection kept at
        # synchronous=NORMAL for good — SQLite fixes the safety level per connection, and
        # switching this one to NORMAL and back cost two statements per relaxed write. Opened
        # here, not at the first relaxed write: threads sharing a store would race to open it.
        # A private in-memory database (``:memory:``) has no second connection and nothing
        # to fsync: its relaxed writes go through ``conn``.
        private = self.path in ("", ":memory:")
        self._relaxed = conn if private else self._connect("NORMAL")
        self._batching = False  # inside begin_batch … end_batch (see there)
        self._batch_metas: dict[str, str | None] = {}  # meta values the batch writes at its end

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        uri = self.path.startswith("file:")  # a URI opens as one (simulator.vopr.disk: in memory)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30, uri=uri)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def close(self) -> None:
        if self._relaxed is not self.conn:
            self._relaxed.close()  # between relaxed writes it holds no transaction
        self.conn.close()

    @contextlib.contextmanager
    def relaxed_txn(self) -> Iterator[sqlite3.Connection]:
        """A write transaction without fsync: survives a crash of the process, may be lost
        in a power cut. Only for records whose loss is harmless (see module doc); every
        other write runs in a durable :func:`~terminal.txn.write_txn`. Inside a caller's
        transaction it joins that one (durable then: SQLite fixes the safety level per
        connection); otherwise it runs on the relaxed connection (see ``__init__``)."""
        if self.conn.in_transaction:
            with write_txn(self.conn) as conn:
                yield conn
            return
        with write_txn(self._relaxed) as conn:
            yield conn

    def joined_txn(self) -> contextlib.AbstractContextManager[Any]:
        """A write transaction of its own — or, inside the caller's, that one, without a
        savepoint: the sync agent settles an ack (or applies a delta) and records the sync
        time in one transaction, and an error inside rolls all of it back (it re-raises out
        of the caller's ``with write_txn``). A caller that catches such an error must not
        commit. Inside a batch (:meth:`begin_batch`) the first such write opens the batch's
        transaction, which :meth:`end_batch` ends."""
        conn = self.conn
        if conn.in_transaction:
            return _JOINED
        if self._batching:
            conn.execute("BEGIN IMMEDIATE")
            return _JOINED
        return write_txn(conn)

    def begin_batch(self) -> None:
        """From now until :meth:`end_batch`, the durable writes made through
        :meth:`joined_txn` (acks settled, deltas applied, the sync time and the delta
        version with them) share one transaction, opened by the first of them — none, when
        nothing was written. The sync agent batches the acks and deltas that arrived
        together: one commit, not one per message. The meta values written in the batch's
        transaction (:meth:`set_metas`, a delta's version and sync time) are written once,
        the last value of each key, in one statement just before the commit."""
        self._batching = True

    def end_batch(self, commit: bool) -> None:
        """Commit the batch's transaction (or, with ``commit`` False, roll it back), if one
        was opened; the writes after this take transactions of their own again. After a
        commit, :meth:`settle_rules` (a delta in the batch may have changed them)."""
        self._batching = False
        metas, self._batch_metas = self._batch_metas, {}
        conn = self.conn
        if conn.in_transaction:
            if commit:
                if metas:
                    self._write_metas(metas)
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")
        if commit:
            self.settle_rules()

    def _write_metas(self, values: dict[str, str | None]) -> None:
        """Meta values in as few statements as they take: one for those set, one for those
        deleted (None) — inside the caller's transaction."""
        sets = [(k, v) for k, v in values.items() if v is not None]
        if sets:
            self.conn.execute(_set_metas_sql(len(sets)), [x for kv in sets for x in kv])
        gone = [k for k, v in values.items() if v is None]
        if gone:
            self.conn.execute(f"DELETE FROM meta WHERE key IN ({', '.join(['?'] * len(gone))})", gone)

    def relaxed_write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """One statement written as :meth:`relaxed_txn` writes, without the BEGIN and COMMIT
        around it: a single statement is its own transaction (all or nothing)."""
        if self.conn.in_transaction:
            self.conn.execute(sql, params)  # part of the caller's transaction
            return
        self._relaxed.execute(sql, params)

    # --- meta --------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(_SET_META, (key, value))

    def set_metas(self, values: dict[str, str | None]) -> None:
        """Several meta values in one relaxed transaction (None deletes a key); in a batch's
        transaction (:meth:`begin_batch`), with the batch's commit."""
        if self._batching and self.conn.in_transaction:
            self._batch_metas.update(values)
            return
        statements = [_meta_statement(k, v) for k, v in values.items()]
        if len(statements) == 1:
            self.relaxed_write(*statements[0])
            return
        with self.relaxed_txn() as conn:
            for sql, params in statements:
                conn.execute(sql, params)

    @property
    def delta_version(self) -> int:
        return int(self.get_meta("delta_version", "0") or 0)

    # --- cache reads ---------------------------------------------------------------------

    def card_state(self, card_id: str, now_ms: int | None = None) -> CardState | None:
        """The card as cached; its subsidy is what a sale at ``now_ms`` may spend (the
        subsidy of that year: 年末清零), the rest of the subsidy counted as expired.
        Without ``now_ms``, as of the year the server last spoke of."""
        row = self.conn.execute(_CARD_STATE_ONLY, {"card": card_id}).fetchone()
        return None if row is None else _card_from_row(row, now_ms)

    def card_state_and_floor(
        self, card_id: str, now_ms: int
    ) -> tuple[CardState | None, tuple[int | None, int]]:
        """:meth:`card_state` and :meth:`journal_floor_and_unsent` (every tap asks both), in
        one read when the card is known; an unknown card takes the second read."""
        row = self.conn.execute(_CARD_STATE_AND_FLOOR, {"card": card_id}).fetchone()
        if row is None:
            return None, self.journal_floor_and_unsent()
        return _card_from_row(row, now_ms), (row[13], int(row[14]))  # latest, unsent

    def canteen_config(self, canteen_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT config_json FROM canteens WHERE canteen_id = ?", (canteen_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def rules_source(self, canteen_id: str) -> tuple[str | None, str | None]:
        """The text the canteen's rules are parsed from: its config and the terminal
        settings (JSON; None where absent), in one read."""
        config, settings = self.conn.execute(
            "SELECT (SELECT config_json FROM canteens WHERE canteen_id = ?), "
            "(SELECT value FROM meta WHERE key = 'settings')",
            (canteen_id,),
        ).fetchone()
        return config, settings

    def rules_epoch(self) -> int | None:
        """A number that moves on whenever :meth:`rules_source` may read something else, or
        None while a change is being written (read the source). Ask it before the source."""
        mark = self._rules_mark
        return None if mark.unsettled else mark.epoch

    def settle_rules(self) -> None:
        """The transaction :meth:`apply_changes` wrote in has committed (the caller's, when
        it joined one): readers of the rules read their source again."""
        mark = self._rules_mark
        if mark.unsettled:
            mark.epoch += 1
            mark.unsettled = False

    def meals_taken(self, holder_id: str, canteen_id: str, meal_period: str, day: str, since_ms: int) -> int:
        """The holder's meals in ``meal_period`` at this canteen on ``day`` (which starts at
        ``since_ms``), as far as this terminal knows: its own journal (acknowledged sales
        too), or — when larger — the server's count from the holder change (every
        terminal's applied meals) plus this terminal's sales it has not acknowledged yet."""
        own, pending, meals_json = self.conn.execute(
            "SELECT count(*), coalesce(sum(status = 'pending'), 0), "
            "(SELECT meals_json FROM holders WHERE holder_id = :holder AND meals_day = :day) "
            "FROM journal WHERE holder_id = :holder AND occurred_at_ms >= :since AND kind = 'meal' "
            f"AND meal_period = :period AND status <> 'rejected' AND NOT {_REVERSED}",
            {"holder": holder_id, "day": day, "since": since_ms, "period": meal_period},
        ).fetchone()
        server = int(json.loads(meals_json).get(canteen_id, {}).get(meal_period, 0)) if meals_json else 0
        return max(int(own), server + int(pending))

    def journal_floor_and_unsent(self) -> tuple[int | None, int]:
        """The latest sale time in the journal (the clock must not be set before it) and
        :meth:`pending_count`, in one read: every tap asks both."""
        latest, unsent = self.conn.execute(_FLOOR_AND_UNSENT).fetchone()
        return latest, int(unsent)

    # --- the journal ---------------------------------------------------------------------

    def record_sale(
        self,
        *,
        terminal_id: str,
        canteen_id: str,
        card_id: str | None,
        holder_id: str | None,
        amount_fen: int,
        subsidy_fen: int,
        self_fen: int,
        occurred_at_ms: int,
        method: str = "card",
        kind: str = "meal",
        meal_period: str | None = None,
        items: tuple[Item, ...] = (),
        offline: bool = False,
        visitor: bool = False,
        credential: str | None = None,
        announced: bool = False,
        pin_approval: str | None = None,
    ) -> Sale:
        """Journal a sale and queue it for upload, in one durable transaction. The sale is
        not sent before :meth:`mark_announced` (or ``announced=True``)."""
        with write_txn(self.conn):
            seq = int(self.conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM journal").fetchone()[0])
            sale = Sale(
                terminal_id=terminal_id,
                seq=seq,
                uuid=uuid7_hex(occurred_at_ms),
                card_id=card_id,
                canteen_id=canteen_id,
                amount_fen=amount_fen,
                occurred_at_ms=occurred_at_ms,
                method=method,
                kind=kind,
                meal_period=meal_period,
                items=items,
                offline=offline,
                visitor=visitor,
                subsidy_fen=subsidy_fen,
                self_fen=self_fen,
                credential=credential,
                pin_approval=pin_approval,
            )
            sale.validate()
            self.conn.execute(
                """
                INSERT INTO journal(seq, uuid, card_id, holder_id, amount_fen, subsidy_fen, self_fen,
                    method, kind, meal_period, visitor, offline, occurred_at_ms, sale_json, announced,
                    canonical)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                """,
                (
                    seq,
                    sale.uuid,
                    card_id,
                    holder_id,
                    amount_fen,
                    subsidy_fen,
                    self_fen,
                    method,
                    kind,
                    meal_period,
                    int(visitor),
                    int(offline),
                    occurred_at_ms,
                    canonical_json(sale.to_dict()).decode(),  # sent as stored: outbox_wire_after
                    int(announced),
                ),
            )
            self.conn.execute("INSERT INTO outbox(seq) VALUES (?)", (seq,))
        return sale

    def mark_announced(self, seq: int) -> None:
        self.relaxed_write("UPDATE journal SET announced = 1 WHERE seq = ?", (seq,))

    def unannounced(self) -> list[Sale]:
        """Sales journaled but never announced (the power went in between), oldest first."""
        return [
            Sale.from_dict(json.loads(r[0]))
            for r in self.conn.execute("SELECT sale_json FROM journal WHERE announced = 0 ORDER BY seq")
        ]

    def record_decline(
        self, at_ms: int, card_id: str | None, method: str, reason: str, meal_period: str | None
    ) -> None:
        """Declines only feed the operator's totals: written without an fsync."""
        self.relaxed_write(
            "INSERT INTO declines(at_ms, card_id, method, reason, meal_period) VALUES (?, ?, ?, ?, ?)",
            (at_ms, card_id, method, reason, meal_period),
        )

    # --- the outbox ----------------------------------------------------------------------

    def outbox_after(self, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Unacknowledged sales after ``after_seq``, oldest first, up to the first sale not
        yet announced to its diner."""
        return [(seq, json.loads(text)) for seq, text in self.outbox_wire_after(after_seq, limit)]

    def outbox_wire_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """:meth:`outbox_after`, each sale as its canonical JSON text: as journaled (a row
        written before the journal kept that form is encoded canonically here)."""
        return [
            (r[0], r[1] if r[2] else canonical_json(json.loads(r[1])).decode())
            for r in self.conn.execute(
                "SELECT o.seq, j.sale_json, j.canonical FROM outbox o JOIN journal j ON j.seq = o.seq "
                "WHERE o.seq > ? AND o.seq < coalesce((SELECT min(seq) FROM journal WHERE announced = 0), ?) "
                "ORDER BY o.seq LIMIT ?",
                (after_seq, _MAX_SEQ, limit),
            )
        ]

    def pending_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest_pending_ms(self) -> int | None:
        """The oldest sale, or reversal the server has not taken, still unsent (the watermark)."""
        return self.conn.execute(_OLDEST_PENDING).fetchone()[0]

    def pending_and_oldest(self) -> tuple[int, int | None]:
        """:meth:`pending_count` and :meth:`oldest_pending_ms` in one read (the status asks both)."""
        pending, oldest = self.conn.execute(_PENDING_AND_OLDEST).fetchone()
        return int(pending), oldest

    def apply_results(self, results: tuple[SaleResult, ...], terminal_id: str) -> dict[str, int]:
        """Settle acknowledged sales: leave the outbox, mark the journal, refresh balances.
        A sale the server quarantined (held for an admin's review) is final here too: it
        leaves the outbox and is journaled as not applied (``rejected``) with the
        quarantine reason, which the totals show as 待审核. Inside a caller's transaction
        it joins that one (:meth:`joined_txn`)."""
        counts = {"applied": 0, "rejected": 0, "quarantined": 0, "ignored": 0}
        ours = [r for r in results if r.terminal_id == terminal_id]
        counts["ignored"] = len(results) - len(ours)
        with self.joined_txn():
            # the usual ack: every result names a sale of this journal — one statement each
            # for the journal, the outbox and the balances; otherwise result by result
            settled = ours if self._settle_all(ours) else self._settle_each(ours)
            counts["ignored"] += len(ours) - len(settled)
            for r in settled:
                counts["quarantined" if r.quarantined else _outcome(r)] += 1
            self.conn.executemany(_DELETE_OUTBOX, [(r.seq,) for r in settled])
            balances = [(r.holder_id, r.balance) for r in settled if r.holder_id and r.balance is not None]
            self.conn.executemany(_TAKE_BALANCE, [_balance_params(h, b) for h, b in balances])
        return counts

    def _settle_all(self, results: list[SaleResult]) -> bool:
        """Mark every result's sale in the journal at once; False when some result names no
        sale of this journal (the statements then count for nothing: every marked row is
        marked again, to the same, by :meth:`_settle_each`)."""
        cursor = self.conn.executemany(_SETTLE, [(_outcome(r), r.reason, r.seq, r.uuid) for r in results])
        return cursor.rowcount == len(results)  # seq is the key: a result marks one row or none

    def _settle_each(self, results: list[SaleResult]) -> list[SaleResult]:
        """Mark the results' sales one by one: those that name a sale of this journal."""
        return [
            r for r in results if self.conn.execute(_SETTLE, (_outcome(r), r.reason, r.seq, r.uuid)).rowcount
        ]

    def take_balance(self, holder_id: str, balance: Balance) -> None:
        """A holder's purses as an ack reported them, unless the cache holds a newer version
        (call inside the caller's transaction)."""
        self.conn.execute(_TAKE_BALANCE, _balance_params(holder_id, balance))

    # --- downstream ----------------------------------------------------------------------

    def apply_changes(
        self,
        version: int,
        changes: Iterable[Change | dict[str, Any]],
        *,
        snapshot: bool = False,
        synced_ms: int | None = None,
    ) -> None:
        """Apply a delta (or, with ``snapshot``, replace the whole cache) at ``version``:
        typed changes as :meth:`Delta.from_body` decoded them. Anything else is refused
        (``unknown_change_kind``) and nothing of the delta is applied.

        Deltas arrive in version order, so a holder's ``blocked`` flag and unit always
        take the delta's value. Balances also come with acks (``SaleResult.balance``, at
        the version of the delta the server is about to publish), which can run ahead of
        the deltas: a delta's balances replace the cached ones only if not older. An ack
        carries no ``blocked`` flag, so a block recorded at version 10 still arrives with
        delta 10 after an ack brought the balances of version 11.

        ``synced_ms``: the sync time (``last_sync_ms``) to store with the delta version, in
        the same statement. Inside a caller's transaction it joins that one
        (:meth:`joined_txn`); the caller then calls :meth:`settle_rules` once that has
        committed."""
        holders, cards = [], []
        joined = self.conn.in_transaction or self._batching  # the caller settles the rules
        with self.joined_txn():
            if snapshot:
                self._rules_mark.unsettled = True
                # holders are upserted by version below (an ack may already have brought a
                # newer balance than the snapshot's); cards and rules are replaced wholesale
                for table in ("cards", "canteens"):
                    self.conn.execute(f"DELETE FROM {table}")
                face_cache.clear_faces(self.conn, version)
                clear_qr_keys(self.conn)
            for c in changes:
                match c:
                    case HolderChange(meals=m):
                        holders.append(
                            (
                                c.holder_id,
                                c.unit_id,
                                c.subsidy_fen,
                                c.self_fen,
                                int(c.blocked),
                                version,
                                None if m is None else m.day,
                                None if m is None else orjson.dumps(m.taken).decode(),
                                c.subsidy_year,
                                c.next_subsidy_fen,
                                c.expired_subsidy_fen,
                            )
                        )
                    case CardChange():
                        cards.append((c.card_id, c.holder_id, c.status))
                    case CanteenChange():
                        self._rules_mark.unsettled = True
                        self.conn.execute(
                            "INSERT INTO canteens(canteen_id, config_json) VALUES (?, ?) "
                            "ON CONFLICT(canteen_id) DO UPDATE SET config_json = excluded.config_json",
                            (c.canteen_id, json.dumps(c.config, ensure_ascii=False)),
                        )
                    case SettingsChange():
                        self._rules_mark.unsettled = True
                        self.set_meta("settings", json.dumps(c.config, ensure_ascii=False))
                    case FaceChange():
                        face_cache.apply_face_change(self.conn, c, version)
                    case QrKeyChange():
                        apply_qr_key_change(self.conn, c)
                    case _:
                        raise DomainError("unknown_change_kind", f"not a change record: {type(c).__name__}")
            if holders:
                self.conn.executemany(_UPSERT_HOLDERS, holders)
            if cards:
                self.conn.executemany(_UPSERT_CARDS, cards)
            if self._batching:  # in the batch's transaction: written with its commit
                self._batch_metas["delta_version"] = str(version)
                if synced_ms is not None:
                    self._batch_metas["last_sync_ms"] = str(synced_ms)
            elif synced_ms is None:
                self.set_meta("delta_version", str(version))
            else:
                self.conn.execute(
                    _SET_TWO_METAS, ("delta_version", str(version), "last_sync_ms", str(synced_ms))
                )
        if not joined:
            self.settle_rules()
