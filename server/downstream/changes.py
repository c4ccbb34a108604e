"""The change records terminals cache, and the builders that read them from their tables.

Each downstream change is a small JSON object with a ``kind``: ``settings``, ``canteen``,
``holder`` (purses, blocked flag and, when known, the day's meals), ``card``, ``face`` and
``qr_key``. The single-record builders (:func:`canteen_change`, :func:`holder_change_from`,
:func:`face_change`, :func:`qr_key_change`) are used by whoever records a delta; the
table-wide readers (:func:`face_changes`, :func:`qr_key_changes`, :func:`meals_of_day_for_all`)
serve the snapshot, and :func:`meals_of_day` the ingest worker's batches. They read their
tables directly, so this area depends on no registry or sales module.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from server.books.periods import china_day_of_ms
from server.infra.schema import PURSE_PAID, not_reversed_sql
from shared.clock import DAY_MS
from shared.protocol.face_vector import encoding_to_str
from shared.protocol.messages import MAX_MEALS_PER_PERIOD


def settings_change(config: dict[str, Any]) -> dict[str, Any]:
    """The city-wide terminal settings (risk limits, the face policy …)."""
    return {"kind": "settings", "config": config}


def card_change(card_id: str, holder_id: str, status: str) -> dict[str, Any]:
    return {"kind": "card", "card_id": card_id, "holder_id": holder_id, "status": status}


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


def holder_blocked(blocked_flag: bool, self_fen: int) -> bool:
    """Blocked by an administrator, or while an offline overdraft is uncovered."""
    return blocked_flag or self_fen < 0


def holder_change_from(
    holder_id: str,
    unit_id: str,
    blocked_flag: bool,
    subsidy_fen: int,
    self_fen: int,
    subsidy_year: int,
    next_subsidy_fen: int,
    expired_subsidy_fen: int,
) -> dict[str, Any]:
    """The 'holder' change from values the caller already holds (the sale applier and the
    snapshot track them); blocked while an offline overdraft is uncovered. ``subsidy_fen``
    is the subsidy of ``subsidy_year`` (the year it is now), ``next_subsidy_fen`` the next
    year's: a terminal spends each only on sales dated in its year (第十条 年末清零);
    ``expired_subsidy_fen`` is earlier years' subsidy awaiting the clearing (never spent,
    only named when a diner is declined: 补贴已到期，待年末清算)."""
    return {
        "kind": "holder",
        "holder_id": holder_id,
        "unit_id": unit_id,
        "subsidy_fen": subsidy_fen,
        "self_fen": self_fen,
        "blocked": holder_blocked(blocked_flag, self_fen),
        "subsidy_year": subsidy_year,
        "next_subsidy_fen": next_subsidy_fen,
        "expired_subsidy_fen": expired_subsidy_fen,
    }


def face_change(face_id: str, holder_id: str, encoding: bytes | None) -> dict[str, Any]:
    """A face enrolled (with its encoding) or withdrawn (``encoding`` None)."""
    return {
        "kind": "face",
        "face_id": face_id,
        "holder_id": holder_id,
        "encoding": encoding_to_str(encoding) if encoding is not None else None,
    }


def face_changes(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every enrolled face as downstream changes (for the snapshot)."""
    return [
        face_change(r[0], r[1], r[2])
        for r in conn.execute("SELECT face_id, holder_id, encoding FROM faces ORDER BY face_id")
    ]


def qr_key_change(
    holder_id: str, public_key: str, expires_at_ms: int, revoked_at_ms: int | None, offline_allowance_fen: int
) -> dict[str, Any]:
    """A holder's QR payment credential as terminals know it; a revoked credential expires
    at its revocation."""
    return {
        "kind": "qr_key",
        "holder_id": holder_id,
        "public_key": public_key,
        "expires_at_ms": expires_at_ms if revoked_at_ms is None else min(expires_at_ms, revoked_at_ms),
        "offline_allowance_fen": offline_allowance_fen,
    }


def qr_key_changes(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every holder's newest credential as a ``qr_key`` change (for snapshots)."""
    rows = conn.execute(
        "SELECT holder_id, public_key, expires_at_ms, revoked_at_ms, offline_allowance_fen "
        "FROM qr_credentials q WHERE q.rowid = ("
        "SELECT q2.rowid FROM qr_credentials q2 WHERE q2.holder_id = q.holder_id "
        "ORDER BY q2.issued_at_ms DESC, q2.rowid DESC LIMIT 1) ORDER BY holder_id"
    )
    return [qr_key_change(*r) for r in rows]


def meals_of_day(conn: sqlite3.Connection, latest_meal_ms: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each holder's applied meals on the day (Asia/Shanghai) of the given time, by canteen
    and period: the ``meals`` of their holder change, so that every terminal counts the
    meals the others sold against the meal limit (``terminal.store.Store.meals_taken``).
    One query per day and chunk of holders (the ingest worker calls this for every batch;
    its meals are nearly always of one day)."""
    out: dict[str, dict[str, Any]] = {}
    by_day: dict[int, list[str]] = {}
    for holder_id, at_ms in latest_meal_ms.items():
        start, day = china_day_of_ms(at_ms)
        by_day.setdefault(start, []).append(holder_id)
        out[holder_id] = {"day": day, "taken": {}}
    for start, holders in by_day.items():
        for i in range(0, len(holders), _MEALS_CHUNK):
            chunk = holders[i : i + _MEALS_CHUNK]
            sql = _MEALS_OF_DAY.format(holders=", ".join("?" * len(chunk)))
            for holder_id, canteen_id, period, n in conn.execute(sql, [*chunk, start, start + DAY_MS]):
                _add_meal_count(out[holder_id], canteen_id, period, n)
    return out


def _add_meal_count(meals: dict[str, Any], canteen_id: str, period: str | None, n: int) -> None:
    """One (canteen, period) count into a holder's ``meals``, clamped to what the wire allows."""
    if period is not None:
        meals["taken"].setdefault(canteen_id, {})[period] = min(n, MAX_MEALS_PER_PERIOD)


def meals_of_day_for_all(conn: sqlite3.Connection, at_ms: int) -> dict[str, dict[str, Any]]:
    """Every holder's applied meals on the day of ``at_ms``, shaped as in
    :func:`meals_of_day` (for the snapshot: a fresh terminal knows today's meals at once).
    Reads the day's range of the settlement index, canteen by canteen."""
    start, day = china_day_of_ms(at_ms)
    out: dict[str, dict[str, Any]] = {}
    for holder_id, canteen_id, period, n in conn.execute(_MEALS_OF_DAY_ALL, (start, start + DAY_MS)):
        if holder_id is not None:
            _add_meal_count(out.setdefault(holder_id, {"day": day, "taken": {}}), canteen_id, period, n)
    return out


_MEALS_OF_DAY_ALL = (  # a reversed meal (冲正: not served) is not a meal taken
    "SELECT holder_id, canteen_id, meal_period, count(*) FROM sales "
    f"WHERE {PURSE_PAID} AND canteen_id IN (SELECT id FROM canteens) "
    "AND occurred_at_ms >= ? AND occurred_at_ms < ? AND kind = 'meal' "
    f"AND {not_reversed_sql()} "
    "GROUP BY holder_id, canteen_id, meal_period"
)
_MEALS_CHUNK = 300
# holders of one day: a list and a range, not a join with a VALUES list of (holder, day)
# windows, which PostgreSQL, before it has statistics on a fast-growing sales table (the
# ingest's first hours), planned as a loop over every sale for every holder wanted (1.3 s
# for 300 holders among 11,400 sales); this reads those holders' sales by their index
_MEALS_OF_DAY = (
    "SELECT s.holder_id, s.canteen_id, s.meal_period, count(*) FROM sales s "
    "WHERE s.holder_id IN ({holders}) AND s.occurred_at_ms >= ? AND s.occurred_at_ms < ? "
    f"AND s.kind = 'meal' AND s.status = 'applied' AND {not_reversed_sql('s')} "
    "GROUP BY s.holder_id, s.canteen_id, s.meal_period"
)
