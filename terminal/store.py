"""The terminal's SQLite store: the cache, the sale journal and the outbox.

Opened with WAL and ``synchronous=FULL``: when :meth:`Store.record_sale` returns, the sale
and its outbox row are on disk together, so a power cut after the diner heard "paid" loses
nothing, and a power cut before it leaves no half-sale. Each thread opens its own
:class:`Store` on the same file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.protocol import Item, Sale, SaleResult
from terminal import face_cache
from terminal.qr_verify import apply_qr_key_change, clear_qr_keys
from terminal.schema import MIGRATIONS


@dataclass(frozen=True)
class CardState:
    """What the terminal knows about a card and its holder at the moment of a tap."""

    card_id: str
    card_status: str
    holder_id: str
    unit_id: str
    subsidy_fen: int
    self_fen: int
    blocked: bool
    version: int
    unconfirmed_fen: int  # this terminal's sales for the holder not yet acknowledged
    unconfirmed_count: int


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        self.conn = conn
        self._migrate()

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        from server.db import _statements  # the same tiny SQL splitter; no server state

        current = self.conn.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.txn():
                for stmt in _statements(sql):
                    self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def txn(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # --- meta --------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def delta_version(self) -> int:
        return int(self.get_meta("delta_version", "0") or 0)

    # --- cache reads ---------------------------------------------------------------------

    def card_state(self, card_id: str) -> CardState | None:
        row = self.conn.execute(
            """
            SELECT c.card_id, c.status, h.holder_id, h.unit_id, h.subsidy_fen, h.self_fen,
                   h.blocked, h.version
            FROM cards c JOIN holders h ON h.holder_id = c.holder_id WHERE c.card_id = ?
            """,
            (card_id,),
        ).fetchone()
        if row is None:
            return None
        pend = self.conn.execute(
            "SELECT coalesce(sum(amount_fen), 0), count(*) FROM journal "
            "WHERE holder_id = ? AND status = 'pending'",
            (row["holder_id"],),
        ).fetchone()
        return CardState(
            card_id=row["card_id"],
            card_status=row["status"],
            holder_id=row["holder_id"],
            unit_id=row["unit_id"],
            subsidy_fen=row["subsidy_fen"],
            self_fen=row["self_fen"],
            blocked=bool(row["blocked"]),
            version=row["version"],
            unconfirmed_fen=int(pend[0]),
            unconfirmed_count=int(pend[1]),
        )

    def canteen_config(self, canteen_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT config_json FROM canteens WHERE canteen_id = ?", (canteen_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def settings(self) -> dict[str, Any]:
        return json.loads(self.get_meta("settings", "{}") or "{}")

    def meals_taken(self, holder_id: str, meal_period: str, since_ms: int) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM journal WHERE holder_id = ? AND kind = 'meal' "
                "AND meal_period = ? AND occurred_at_ms >= ? AND status <> 'rejected'",
                (holder_id, meal_period, since_ms),
            ).fetchone()[0]
        )

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
    ) -> Sale:
        """Journal a sale and queue it for upload, in one durable transaction."""
        with self.txn():
            seq = int(self.conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM journal").fetchone()[0])
            sale = Sale(
                terminal_id=terminal_id, seq=seq, uuid=uuidlib.uuid4().hex, card_id=card_id,
                canteen_id=canteen_id, amount_fen=amount_fen, occurred_at_ms=occurred_at_ms,
                method=method, kind=kind, meal_period=meal_period, items=items, offline=offline,
                visitor=visitor, subsidy_fen=subsidy_fen, self_fen=self_fen, credential=credential,
            )
            sale.validate()
            self.conn.execute(
                """
                INSERT INTO journal(seq, uuid, card_id, holder_id, amount_fen, subsidy_fen, self_fen,
                    method, kind, meal_period, visitor, offline, occurred_at_ms, sale_json)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                (
                    seq, sale.uuid, card_id, holder_id, amount_fen, subsidy_fen, self_fen, method,
                    kind, meal_period, int(visitor), int(offline), occurred_at_ms,
                    json.dumps(sale.to_dict(), ensure_ascii=False),
                ),
            )
            self.conn.execute("INSERT INTO outbox(seq) VALUES (?)", (seq,))
        return sale

    def record_decline(self, at_ms: int, card_id: str | None, method: str, reason: str, meal_period: str | None) -> None:
        self.conn.execute(
            "INSERT INTO declines(at_ms, card_id, method, reason, meal_period) VALUES (?, ?, ?, ?, ?)",
            (at_ms, card_id, method, reason, meal_period),
        )

    # --- the outbox ----------------------------------------------------------------------

    def outbox_after(self, after_seq: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        return [
            (r[0], json.loads(r[1]))
            for r in self.conn.execute(
                "SELECT o.seq, j.sale_json FROM outbox o JOIN journal j ON j.seq = o.seq "
                "WHERE o.seq > ? ORDER BY o.seq LIMIT ?",
                (after_seq, limit),
            )
        ]

    def pending_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest_pending_ms(self) -> int | None:
        row = self.conn.execute(
            "SELECT min(j.occurred_at_ms) FROM outbox o JOIN journal j ON j.seq = o.seq"
        ).fetchone()
        return row[0]

    def apply_results(self, results: tuple[SaleResult, ...], terminal_id: str) -> dict[str, int]:
        """Settle acknowledged sales: leave the outbox, mark the journal, refresh balances."""
        counts = {"applied": 0, "rejected": 0, "ignored": 0}
        with self.txn():
            for r in results:
                if r.terminal_id != terminal_id:
                    counts["ignored"] += 1
                    continue
                row = self.conn.execute("SELECT uuid FROM journal WHERE seq = ?", (r.seq,)).fetchone()
                if row is None or row[0] != r.uuid:
                    counts["ignored"] += 1
                    continue
                rejected = r.status == "rejected" or (r.status == "duplicate" and r.reason)
                self.conn.execute(
                    "UPDATE journal SET status = ?, reason = ? WHERE seq = ?",
                    ("rejected" if rejected else "applied", r.reason, r.seq),
                )
                self.conn.execute("DELETE FROM outbox WHERE seq = ?", (r.seq,))
                counts["rejected" if rejected else "applied"] += 1
                if r.holder_id and r.balance is not None:
                    self.conn.execute(
                        "UPDATE holders SET subsidy_fen = ?, self_fen = ?, version = ? "
                        "WHERE holder_id = ? AND version < ?",
                        (r.balance.subsidy_fen, r.balance.self_fen, r.balance.version, r.holder_id, r.balance.version),
                    )
        return counts

    # --- downstream ----------------------------------------------------------------------

    def apply_changes(self, version: int, changes: tuple[dict[str, Any], ...], *, snapshot: bool = False) -> None:
        """Apply a delta (or, with ``snapshot``, replace the whole cache) at ``version``."""
        with self.txn():
            if snapshot:
                # holders are upserted by version below (an ack may already have brought a
                # newer balance than the snapshot's); cards and rules are replaced wholesale
                for table in ("cards", "canteens"):
                    self.conn.execute(f"DELETE FROM {table}")
                face_cache.clear_faces(self.conn, version)
                clear_qr_keys(self.conn)
            for c in changes:
                kind = c["kind"]
                if kind == "holder":
                    self.conn.execute(
                        """
                        INSERT INTO holders(holder_id, unit_id, subsidy_fen, self_fen, blocked, version)
                        VALUES (?, ?, ?, ?, ?, ?)
                        ON CONFLICT(holder_id) DO UPDATE SET unit_id = excluded.unit_id,
                            subsidy_fen = excluded.subsidy_fen, self_fen = excluded.self_fen,
                            blocked = excluded.blocked, version = excluded.version
                        WHERE excluded.version > holders.version
                        """,
                        (c["holder_id"], c["unit_id"], c["subsidy_fen"], c["self_fen"], int(c["blocked"]), version),
                    )
                elif kind == "card":
                    self.conn.execute(
                        "INSERT INTO cards(card_id, holder_id, status) VALUES (?, ?, ?) "
                        "ON CONFLICT(card_id) DO UPDATE SET holder_id = excluded.holder_id, status = excluded.status",
                        (c["card_id"], c["holder_id"], c["status"]),
                    )
                elif kind == "canteen":
                    self.conn.execute(
                        "INSERT INTO canteens(canteen_id, config_json) VALUES (?, ?) "
                        "ON CONFLICT(canteen_id) DO UPDATE SET config_json = excluded.config_json",
                        (c["canteen_id"], json.dumps(c["config"], ensure_ascii=False)),
                    )
                elif kind == "settings":
                    self.set_meta("settings", json.dumps(c["config"], ensure_ascii=False))
                elif kind == "face":
                    face_cache.apply_face_change(self.conn, c, version)
                elif kind == "qr_key":
                    apply_qr_key_change(self.conn, c)
            self.set_meta("delta_version", str(version))
