"""The delta log: every change terminals cache, versioned, in commit order.

Any transaction that changes what terminals cache (a balance, a card's status, a canteen's
prices or limits) calls :func:`record_delta` inside the same transaction, which gives the
change the next version. :func:`deltas_since` reads them back in order, a page at a time
(:data:`shared.protocol.DELTA_PAGE_SIZE`): the publisher
(:mod:`server.downstream.publisher`) sends them on, and a terminal that missed a few
fetches them over HTTP; one that missed too many, or starts fresh, fetches the snapshot
(:mod:`server.downstream.snapshot`). The change records themselves are built in
:mod:`server.downstream.changes`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from shared.errors import DomainError
from shared.protocol import DELTA_PAGE_SIZE, Delta, ProtocolError
from shared.protocol.messages import decode_changes

# A delta travels as one MQTT message (≤ 1 MiB with its envelope). A transaction that
# changes more than fits (a roster import of 20,000 staff) is recorded as several
# consecutive versions in the same commit. That is safe for the "balance at version v"
# rule: each entity appears once, with its state at the end of the transaction, and a
# result tagged with the first version carries that same final state.
MAX_DELTA_BYTES = 512 * 1024


def record_delta(conn: sqlite3.Connection, changes: list[dict[str, Any]], at_ms: int) -> int:
    """Append the changes as one delta — or several consecutive ones if they would not fit
    in a message — inside the write txn that made them; returns the last version.

    Each change is first read back with the terminals' own decoder: one they could not read
    raises ``change_not_carriable`` and the caller's transaction rolls back, so nothing is
    recorded that would leave terminals unable to catch up."""
    if not changes:
        return current_version(conn)
    try:
        decode_changes(changes)
    except ProtocolError as exc:
        raise DomainError("change_not_carriable", f"{exc.code}: {exc.detail}") from exc
    version = 0
    # orjson writes the text json.dumps(c, ensure_ascii=False, separators=(",", ":")) did
    # (compact, UTF-8 as is: the triggers on deltas match '"kind":"canteen"'), ~8× faster
    for chunk in _chunks([orjson.dumps(c) for c in changes]):
        # the next number, never a sequence's (which a rolled-back transaction would skip): the
        # write lock held by the caller's transaction makes the versions gapless. A VALUES row
        # with the number as a scalar subquery, not INSERT ... SELECT FROM deltas: SQLite runs
        # an insert that selects from its own table through a temporary copy of the row (the
        # whole changes text, ~1 KB a sale batch)
        version = int(
            conn.execute(
                "INSERT INTO deltas(version, at_ms, changes_json) "
                "VALUES ((SELECT coalesce(max(version), 0) + 1 FROM deltas), ?, ?) RETURNING version",
                (at_ms, chunk),
            ).fetchone()[0]
        )
    return version


def _chunks(encoded: list[bytes]) -> list[str]:
    """The encoded changes joined into JSON arrays of at most :data:`MAX_DELTA_BYTES`
    (UTF-8) each, in order; one change larger than that is an array of its own."""
    out: list[str] = []
    current: list[bytes] = []
    size = 2
    for item in encoded:
        if current and size + len(item) + 1 > MAX_DELTA_BYTES:
            out.append((b"[" + b",".join(current) + b"]").decode())
            current, size = [], 2
        current.append(item)
        size += len(item) + 1
    out.append((b"[" + b",".join(current) + b"]").decode())
    return out


# the newest version recorded (0: none yet), as a query another may carry as a column
HEAD_VERSION_SQL = "SELECT coalesce(max(version), 0) FROM deltas"


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute(HEAD_VERSION_SQL).fetchone()[0])


def deltas_since(conn: sqlite3.Connection, version: int, limit: int = DELTA_PAGE_SIZE) -> list[Delta]:
    return [
        Delta(version=row[0], changes=tuple(orjson.loads(row[1])))
        for row in conn.execute(
            "SELECT version, changes_json FROM deltas WHERE version > ? ORDER BY version LIMIT ?",
            (version, limit),
        )
    ]
