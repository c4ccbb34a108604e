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
written without an fsync (``synchronous=NORMAL``): losing it in a power cut only means
announcing that sale again after the restart, never a lost or an unannounced sale.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from shared.clock import china_datetime
from shared.errors import DomainError
from shared.ids import uuid7_hex
from shared.private_files import ensure_private_sqlite
from shared.protocol import Item, Sale, SaleResult
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
# sales this terminal has reversed (冲正, terminal.reversals): no longer spending, no meal
_REVERSED = "SELECT sale_seq FROM reversals WHERE status <> 'rejected'"


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        ensure_private_sqlite(self.path)  # cards, keys and sales: the owner's alone
        uri = self.path.startswith("file:")  # a URI opens as one (simulator.vopr.disk: in memory)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30, uri=uri)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        self.conn = conn
        self.db = Database(conn, execute_plugins=False)
        # two threads opening a fresh file at once must not both migrate it: hold the write
        # lock while checking (sqlite-utils' own transactions nest as savepoints)
        with write_txn(conn):
            MIGRATIONS.apply(self.db)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def relaxed_txn(self) -> Iterator[sqlite3.Connection]:
        """A write transaction without fsync: survives a crash of the process, may be lost
        in a power cut. Only for records whose loss is harmless (see module doc); every
        other write runs in a durable :func:`~terminal.txn.write_txn`."""
        self.conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with write_txn(self.conn) as conn:
                yield conn
        finally:
            self.conn.execute("PRAGMA synchronous=FULL")

    # --- meta --------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def set_metas(self, values: dict[str, str | None]) -> None:
        """Several meta values in one relaxed transaction (None deletes a key)."""
        with self.relaxed_txn():
            for k, v in values.items():
                if v is None:
                    self.conn.execute("DELETE FROM meta WHERE key = ?", (k,))
                else:
                    self.set_meta(k, v)

    @property
    def delta_version(self) -> int:
        return int(self.get_meta("delta_version", "0") or 0)

    # --- cache reads ---------------------------------------------------------------------

    def card_state(self, card_id: str, now_ms: int | None = None) -> CardState | None:
        """The card as cached; its subsidy is what a sale at ``now_ms`` may spend (the
        subsidy of that year: 年末清零), the rest of the subsidy counted as expired.
        Without ``now_ms``, as of the year the server last spoke of."""
        row = self.conn.execute(
            """
            SELECT c.card_id, c.status, h.holder_id, h.unit_id, h.subsidy_fen, h.self_fen,
                   h.blocked, h.version, h.subsidy_year, h.next_subsidy_fen,
                   h.expired_subsidy_fen
            FROM cards c JOIN holders h ON h.holder_id = c.holder_id WHERE c.card_id = ?
            """,
            (card_id,),
        ).fetchone()
        if row is None:
            return None
        pend = self.conn.execute(  # a reversed sale is no longer spending (terminal.reversals)
            "SELECT coalesce(sum(amount_fen), 0), count(*) FROM journal "
            f"WHERE holder_id = ? AND status = 'pending' AND seq NOT IN ({_REVERSED})",
            (row["holder_id"],),
        ).fetchone()
        year = row["subsidy_year"] if now_ms is None else china_datetime(now_ms).year
        subsidy, expired = subsidy_for_year(
            row["subsidy_fen"],
            row["subsidy_year"],
            row["next_subsidy_fen"] or 0,
            year,
            row["expired_subsidy_fen"] or 0,
        )
        return CardState(
            card_id=row["card_id"],
            card_status=row["status"],
            holder_id=row["holder_id"],
            unit_id=row["unit_id"],
            subsidy_fen=subsidy,
            expired_subsidy_fen=expired,
            self_fen=row["self_fen"],
            blocked=bool(row["blocked"]),
            version=row["version"],
            unconfirmed_fen=int(pend[0]),
            unconfirmed_count=int(pend[1]),
        )

    def canteen_config(self, canteen_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT config_json FROM canteens WHERE canteen_id = ?", (canteen_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def settings(self) -> dict[str, Any]:
        return json.loads(self.get_meta("settings", "{}") or "{}")

    def meals_taken(self, holder_id: str, canteen_id: str, meal_period: str, day: str, since_ms: int) -> int:
        """The holder's meals in ``meal_period`` at this canteen on ``day`` (which starts at
        ``since_ms``), as far as this terminal knows: its own journal (acknowledged sales
        too), or — when larger — the server's count from the holder change (every
        terminal's applied meals) plus this terminal's sales it has not acknowledged yet."""
        own, pending = self.conn.execute(
            "SELECT count(*), coalesce(sum(status = 'pending'), 0) FROM journal WHERE holder_id = ? "
            "AND occurred_at_ms >= ? AND kind = 'meal' AND meal_period = ? AND status <> 'rejected' "
            f"AND seq NOT IN ({_REVERSED})",
            (holder_id, since_ms, meal_period),
        ).fetchone()
        row = self.conn.execute(
            "SELECT meals_json FROM holders WHERE holder_id = ? AND meals_day = ?", (holder_id, day)
        ).fetchone()
        server = int(json.loads(row[0]).get(canteen_id, {}).get(meal_period, 0)) if row else 0
        return max(int(own), server + int(pending))

    def latest_recorded_ms(self) -> int | None:
        """The latest sale time in the journal: the clock must not be set before it."""
        return self.conn.execute("SELECT max(occurred_at_ms) FROM journal").fetchone()[0]

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
                    method, kind, meal_period, visitor, offline, occurred_at_ms, sale_json, announced)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                    json.dumps(sale.to_dict(), ensure_ascii=False),
                    int(announced),
                ),
            )
            self.conn.execute("INSERT INTO outbox(seq) VALUES (?)", (seq,))
        return sale

    def mark_announced(self, seq: int) -> None:
        with self.relaxed_txn():
            self.conn.execute("UPDATE journal SET announced = 1 WHERE seq = ?", (seq,))

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
        with self.relaxed_txn():
            self.conn.execute(
                "INSERT INTO declines(at_ms, card_id, method, reason, meal_period) VALUES (?, ?, ?, ?, ?)",
                (at_ms, card_id, method, reason, meal_period),
            )

    # --- the outbox ----------------------------------------------------------------------

    def outbox_after(self, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Unacknowledged sales after ``after_seq``, oldest first, up to the first sale not
        yet announced to its diner."""
        first_unannounced = self.conn.execute("SELECT min(seq) FROM journal WHERE announced = 0").fetchone()[
            0
        ]
        return [
            (r[0], json.loads(r[1]))
            for r in self.conn.execute(
                "SELECT o.seq, j.sale_json FROM outbox o JOIN journal j ON j.seq = o.seq "
                "WHERE o.seq > ? AND o.seq < ? ORDER BY o.seq LIMIT ?",
                (after_seq, first_unannounced or _MAX_SEQ, limit),
            )
        ]

    def pending_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest_pending_ms(self) -> int | None:
        """The oldest sale, or reversal the server has not taken, still unsent (the watermark)."""
        row = self.conn.execute(
            "SELECT min(t) FROM (SELECT min(j.occurred_at_ms) AS t FROM outbox o "
            "JOIN journal j ON j.seq = o.seq UNION ALL SELECT min(r.occurred_at_ms) FROM reversal_outbox o "
            "JOIN reversals r ON r.seq = o.seq WHERE r.status = 'new')"
        ).fetchone()
        return row[0]

    def apply_results(self, results: tuple[SaleResult, ...], terminal_id: str) -> dict[str, int]:
        """Settle acknowledged sales: leave the outbox, mark the journal, refresh balances.
        A sale the server quarantined (held for an admin's review) is final here too: it
        leaves the outbox and is journaled as not applied (``rejected``) with the
        quarantine reason, which the totals show as 待审核."""
        counts = {"applied": 0, "rejected": 0, "quarantined": 0, "ignored": 0}
        with write_txn(self.conn):
            for r in results:
                if r.terminal_id != terminal_id:
                    counts["ignored"] += 1
                    continue
                row = self.conn.execute("SELECT uuid FROM journal WHERE seq = ?", (r.seq,)).fetchone()
                if row is None or row[0] != r.uuid:
                    counts["ignored"] += 1
                    continue
                outcome = "rejected" if r.rejected or r.quarantined else "applied"
                self.conn.execute(
                    "UPDATE journal SET status = ?, reason = ? WHERE seq = ?", (outcome, r.reason, r.seq)
                )
                self.conn.execute("DELETE FROM outbox WHERE seq = ?", (r.seq,))
                counts["quarantined" if r.quarantined else outcome] += 1
                if r.holder_id and r.balance is not None:
                    self.take_balance(r.holder_id, r.balance)
        return counts

    def take_balance(self, holder_id: str, balance: Balance) -> None:
        """A holder's purses as an ack reported them, unless the cache holds a newer version
        (call inside the caller's transaction)."""
        self.conn.execute(
            "UPDATE holders SET subsidy_fen = ?, self_fen = ?, version = ?, subsidy_year = ?, "
            "next_subsidy_fen = ?, expired_subsidy_fen = ? WHERE holder_id = ? AND version < ?",
            (
                balance.subsidy_fen,
                balance.self_fen,
                balance.version,
                balance.subsidy_year,
                balance.next_subsidy_fen,
                balance.expired_subsidy_fen,
                holder_id,
                balance.version,
            ),
        )

    # --- downstream ----------------------------------------------------------------------

    def apply_changes(self, version: int, changes: Iterable[Change], *, snapshot: bool = False) -> None:
        """Apply a delta (or, with ``snapshot``, replace the whole cache) at ``version``:
        typed changes as :meth:`Delta.from_body` decoded them. Anything else is refused
        (``unknown_change_kind``) and nothing of the delta is applied.

        Deltas arrive in version order, so a holder's ``blocked`` flag and unit always
        take the delta's value. Balances also come with acks (``SaleResult.balance``, at
        the version of the delta the server is about to publish), which can run ahead of
        the deltas: a delta's balances replace the cached ones only if not older. An ack
        carries no ``blocked`` flag, so a block recorded at version 10 still arrives with
        delta 10 after an ack brought the balances of version 11."""
        holders, cards = [], []
        with write_txn(self.conn):
            if snapshot:
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
                                None if m is None else json.dumps(m.taken, ensure_ascii=False),
                                c.subsidy_year,
                                c.next_subsidy_fen,
                                c.expired_subsidy_fen,
                            )
                        )
                    case CardChange():
                        cards.append((c.card_id, c.holder_id, c.status))
                    case CanteenChange():
                        self.conn.execute(
                            "INSERT INTO canteens(canteen_id, config_json) VALUES (?, ?) "
                            "ON CONFLICT(canteen_id) DO UPDATE SET config_json = excluded.config_json",
                            (c.canteen_id, json.dumps(c.config, ensure_ascii=False)),
                        )
                    case SettingsChange():
                        self.set_meta("settings", json.dumps(c.config, ensure_ascii=False))
                    case FaceChange():
                        face_cache.apply_face_change(self.conn, c, version)
                    case QrKeyChange():
                        apply_qr_key_change(self.conn, c)
                    case _:
                        raise DomainError("unknown_change_kind", f"not a change record: {type(c).__name__}")
            self.conn.executemany(
                """
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
                """,
                holders,
            )
            self.conn.executemany(
                "INSERT INTO cards(card_id, holder_id, status) VALUES (?, ?, ?) "
                "ON CONFLICT(card_id) DO UPDATE SET holder_id = excluded.holder_id, status = excluded.status",
                cards,
            )
            self.set_meta("delta_version", str(version))
