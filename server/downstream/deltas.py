"""The downstream stream: versioned deltas, snapshots, and publishing them in order.

Any transaction that changes what terminals cache (a balance, a card's status, a canteen's
prices or limits) calls :func:`record_delta` inside the same transaction, which gives the
change the next version. :class:`DeltaPublisher` later publishes the recorded deltas in
version order, retained, so a terminal that (re)subscribes gets the newest at once and can
tell from its number whether it missed any; a terminal that did, or starts fresh, fetches
:func:`build_snapshot` over HTTP.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from shared.clock import Clock
from shared.protocol import Delta, ServerKey, Snapshot, seal_server, topics

log = logging.getLogger(__name__)


# A delta travels as one MQTT message (≤ 1 MiB with its envelope). A transaction that
# changes more than fits (a roster import of 20,000 staff) is recorded as several
# consecutive versions in the same commit. That is safe for the "balance at version v"
# rule: each entity appears once, with its state at the end of the transaction, and a
# result tagged with the first version carries that same final state.
MAX_DELTA_BYTES = 512 * 1024


def record_delta(conn: sqlite3.Connection, changes: list[dict[str, Any]], at_ms: int) -> int:
    """Append the changes as one delta — or several consecutive ones if they would not fit
    in a message — inside the write txn that made them; returns the last version."""
    if not changes:
        return current_version(conn)
    version = 0
    for chunk in _chunks([json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in changes]):
        cur = conn.execute("INSERT INTO deltas(at_ms, changes_json) VALUES (?, ?)", (at_ms, chunk))
        version = int(cur.lastrowid or 0)
    return version


def _chunks(encoded: list[str]) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    size = 2
    for item in encoded:
        if current and size + len(item.encode()) + 1 > MAX_DELTA_BYTES:
            out.append("[" + ",".join(current) + "]")
            current, size = [], 2
        current.append(item)
        size += len(item.encode()) + 1
    out.append("[" + ",".join(current) + "]")
    return out


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM deltas").fetchone()[0])


def canteen_change(row: sqlite3.Row) -> dict[str, Any]:
    config = json.loads(row["config_json"])
    config.update(
        {
            "name": row["name"],
            "unit_id": row["unit_id"],
            "self_operated": bool(row["self_operated"]),
        }
    )
    return {"kind": "canteen", "canteen_id": row["id"], "config": config}


def build_snapshot(conn: sqlite3.Connection, now_ms: int | None = None) -> Snapshot:
    """Everything terminals cache, read in one consistent transaction; with ``now_ms``,
    each holder's meals of that day too (the meal limit across terminals)."""
    from server.sales.apply import meals_of_day_for_all  # here: server.sales imports this module

    conn.execute("BEGIN")
    try:
        version = current_version(conn)
        changes: list[dict[str, Any]] = []
        settings = conn.execute("SELECT value FROM settings WHERE key = 'terminal_settings'").fetchone()
        changes.append({"kind": "settings", "config": json.loads(settings[0]) if settings else {}})
        for row in conn.execute("SELECT * FROM canteens ORDER BY id"):
            changes.append(canteen_change(row))
        meals = meals_of_day_for_all(conn, now_ms) if now_ms is not None else {}
        purses: dict[str, list[int]] = {}
        for row in conn.execute(
            "SELECT id, balance_fen FROM accounts WHERE kind IN ('subsidy_purse', 'self_purse')"
        ):
            _, holder_id, purse = row[0].split(":")
            purses.setdefault(holder_id, [0, 0])[0 if purse == "subsidy" else 1] = row[1]
        for row in conn.execute("SELECT id, unit_id, blocked FROM holders ORDER BY id"):
            subsidy, self_ = purses.get(row[0], [0, 0])
            change = {
                "kind": "holder",
                "holder_id": row[0],
                "unit_id": row[1],
                "subsidy_fen": subsidy,
                "self_fen": self_,
                "blocked": bool(row[2]) or self_ < 0,
            }
            if row[0] in meals:
                change["meals"] = meals[row[0]]
            changes.append(change)
        for row in conn.execute("SELECT card_id, holder_id, status FROM cards ORDER BY card_id"):
            changes.append(
                {"kind": "card", "card_id": row[0], "holder_id": row[1], "status": row[2]}
            )
        from server.sales.faces import face_changes  # imported here: server.faces records deltas

        changes.extend(face_changes(conn))
        changes.extend(_qr_key_changes(conn))
    finally:
        conn.execute("COMMIT")
    return Snapshot(version=version, changes=tuple(changes))


def _qr_key_changes(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    from server.sales.qr_codes import snapshot_changes  # QR payment credentials (public keys)

    return snapshot_changes(conn)


def deltas_since(conn: sqlite3.Connection, version: int, limit: int = 1000) -> list[Delta]:
    return [
        Delta(version=row[0], changes=tuple(json.loads(row[1])))
        for row in conn.execute(
            "SELECT version, changes_json FROM deltas WHERE version > ? ORDER BY version LIMIT ?",
            (version, limit),
        )
    ]


class DeltaPublisher:
    """Publishes recorded deltas in version order on the broadcast topic (retained).

    ``poke()`` after a commit that recorded a delta; a timer also polls, so a delta
    recorded by another process (the CLI) goes out too. If the broker is unreachable the
    publisher keeps its place and tries again.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        key: ServerKey,
        publish: Callable[[str, bytes, bool], bool],
        clock: Clock,
        poll_s: float = 0.5,
    ) -> None:
        self._conn = conn
        self._key = key
        self._publish = publish
        self._clock = clock
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        # start one behind the head: republishing the newest refreshes the retained message
        self.published = max(current_version(conn) - 1, 0)
        self._thread = threading.Thread(target=self._run, name="delta-publisher", daemon=True)

    def start(self) -> DeltaPublisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                self.publish_pending()
            except sqlite3.Error as exc:
                log.error("delta publisher: database error: %s", exc)

    def publish_pending(self) -> int:
        sent = 0
        while True:
            batch = deltas_since(self._conn, self.published, limit=200)
            if not batch:
                return sent
            for delta in batch:
                payload = seal_server("delta", delta.to_body(), self._key, self._clock.now_ms())
                if not self._publish(topics.DELTA, payload, True):
                    return sent
                self.published = delta.version
                sent += 1
