"""Takings per quarter of an hour and per day: applied sales summed per canteen and payment
method in two grains — ``sale_slots`` (15-minute slots) and ``sale_days`` (Beijing days) —
so the bureau's dashboard reads a day's takings and its chart from a few hundred summary rows
instead of scanning the day's sales.

* **One definition, kept in step.** :func:`add` is called by
  :class:`server.sales.apply.SaleApplier` in the same transaction that inserts the sale rows,
  with those rows: a sale applied is counted in its slot and its day, in the same commit,
  exactly once (a duplicate or rejected sale is no applied row). Applied sales are never
  changed or deleted afterwards, so nothing else writes here.
* **Checkable.** The ledger and the ``sales`` table stay the source of truth; each grain is
  derived from ``sales`` by its SQL key (:data:`GRAINS`) and :func:`mismatches` recomputes
  the slots from the sales and the days from the slots (``canteen-server check``:
  ``sale_sums_mismatch``). :func:`rebuild`
  recomputes them outright (the migration that created the tables did the same for the
  sales already there).

A slot is ``occurred_at_ms`` rounded down to 15 minutes since the epoch; a day starts at
midnight in Beijing (UTC+8 all year: China has kept no daylight saving time since 1991), so
the slots are the quarter hours of the Beijing clock.
"""

from __future__ import annotations

import functools
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.books.ledger import Violation
from shared.clock import DAY_MS

SLOT_MS = 15 * 60_000
BEIJING_OFFSET_MS = 8 * 3_600_000
SUMS = ("count", "amount_fen", "subsidy_fen", "self_fen")


def slot_of(ms: int) -> int:
    """The start of the 15-minute slot holding ``ms``."""
    return ms - ms % SLOT_MS


def day_of(ms: int) -> int:
    """Midnight (Beijing) of the day holding ``ms``."""
    return ms - (ms + BEIJING_OFFSET_MS) % DAY_MS


@dataclass(frozen=True)
class Grain:
    table: str
    key: str  # the key column: the grain's start in ms
    key_template: str  # the key of a time column ``{t}``, in SQL (the common subset of SQLite and PostgreSQL)

    def key_of(self, ms: int) -> int:
        return slot_of(ms) if self.key == "slot_ms" else day_of(ms)

    def key_sql(self, column: str) -> str:
        return self.key_template.format(t=column)

    @functools.lru_cache(maxsize=512)  # noqa: B019 — the grains are module constants
    def upsert(self, rows: int) -> str:
        """Add ``rows`` rows of sums (distinct keys) to the grain, in one statement (the
        text built once per grain and row count: every ingest transaction asks)."""
        cols = ", ".join(SUMS)
        added = ", ".join(f"{c} = {self.table}.{c} + excluded.{c}" for c in SUMS)
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
        return (
            f"INSERT INTO {self.table}({self.key}, canteen_id, method, {cols}) VALUES {values} "
            f"ON CONFLICT({self.key}, canteen_id, method) DO UPDATE SET {added}"
        )

    @property
    def from_sales(self) -> str:
        """The grain's rows as the applied sales say they are."""
        key = self.key_sql("occurred_at_ms")
        return (
            f"SELECT {key} AS {self.key}, canteen_id, method, count(*) AS count, "
            "sum(amount_fen) AS amount_fen, sum(subsidy_fen) AS subsidy_fen, sum(self_fen) AS self_fen "
            f"FROM sales WHERE status = 'applied' GROUP BY {key}, canteen_id, method"
        )


SLOTS = Grain("sale_slots", "slot_ms", f"({{t}} - {{t}} % {SLOT_MS})")
DAYS = Grain("sale_days", "day_ms", f"({{t}} - ({{t}} + {BEIJING_OFFSET_MS}) % {DAY_MS})")
GRAINS = (SLOTS, DAYS)


_UPSERT_CHUNK = 200  # rows per statement (7 parameters each)


def add(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Count sales rows just inserted (inside the same write transaction) in their slot and
    their day; rows that are not ``applied`` are skipped."""
    applied = [r for r in rows if r["status"] == "applied"]
    for grain in GRAINS:
        sums: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for r in applied:
            s = sums[(grain.key_of(r["occurred_at_ms"]), r["canteen_id"], r["method"])]
            s[0] += 1
            s[1] += r["amount_fen"]
            s[2] += r["subsidy_fen"]
            s[3] += r["self_fen"]
        # one statement per grain (a round trip per row is what a networked database costs);
        # the keys are distinct, so no row meets another in one statement
        rows = [(*key, *s) for key, s in sums.items()]
        for i in range(0, len(rows), _UPSERT_CHUNK):
            chunk = rows[i : i + _UPSERT_CHUNK]
            conn.execute(grain.upsert(len(chunk)), [x for row in chunk for x in row])


def rebuild(conn: sqlite3.Connection) -> None:
    """Recompute both grains from the sales (inside a write transaction): for data written
    around :class:`~server.sales.apply.SaleApplier` (bulk-generated benchmark sales)."""
    for grain in GRAINS:
        conn.execute(f"DELETE FROM {grain.table}")
        columns = f"{grain.key}, canteen_id, method, {', '.join(SUMS)}"
        conn.execute(f"INSERT INTO {grain.table}({columns}) {grain.from_sales}")


def mismatches(conn: sqlite3.Connection, limit: int = 20) -> list[Violation]:
    """Rows that differ from what they sum (empty: all agree): the slots from the applied
    sales (one pass over the sales), and the days from the slots — so the days equal the
    sales' sums too, without a second pass over the sales."""
    day_of_slot = DAYS.key_sql("slot_ms")
    days_from_slots = (
        f"SELECT {day_of_slot} AS day_ms, canteen_id, method, "
        + ", ".join(f"sum({c}) AS {c}" for c in SUMS)
        + f" FROM sale_slots GROUP BY {day_of_slot}, canteen_id, method"
    )
    applied = conn.execute("SELECT count(*) FROM sales WHERE status = 'applied'").fetchone()[0]
    return _differences(conn, SLOTS, SLOTS.from_sales, "its sales", applied, limit) + _differences(
        conn, DAYS, days_from_slots, "its slots", applied, limit
    )


def _differences(
    conn: sqlite3.Connection, grain: Grain, expected: str, what: str, total_count: int, limit: int
) -> list[Violation]:
    """Stored rows that are not the ``expected`` ones. Every expected row is looked up by the
    stored table's key and compared; a stored row with no expected one is found by the count:
    every stored row counts at least one sale, and together they count ``total_count`` (the
    applied sales), so if all expected rows match there is no room for another."""
    key, t = grain.key, grain.table
    differs = " OR ".join(f"s.{c} <> e.{c}" for c in SUMS)
    where = "{} {}={} canteen {} method {}: not the sum of {}"
    out = [
        Violation("sale_sums_mismatch", where.format(t, key, *r, what))
        for r in conn.execute(
            f"SELECT e.{key}, e.canteen_id, e.method FROM ({expected}) e LEFT JOIN {t} s "
            f"ON s.{key} = e.{key} AND s.canteen_id = e.canteen_id AND s.method = e.method "
            f"WHERE s.{key} IS NULL OR {differs} LIMIT ?",
            (limit,),
        )
    ]
    stored_count, empty = conn.execute(
        f"SELECT coalesce(sum(count), 0), coalesce(sum(CASE WHEN count < 1 THEN 1 ELSE 0 END), 0) FROM {t}"
    ).fetchone()
    if empty or stored_count != total_count:
        detail = f"{t} counts {stored_count} sales in all, the sales table {total_count}"
        out.append(Violation("sale_sums_mismatch", detail + (f"; {empty} rows count none" if empty else "")))
    return out


def day_rows(conn: sqlite3.Connection, start_ms: int, end_ms: int) -> list[sqlite3.Row]:
    """Per canteen and payment method, the sums of the Beijing days in [start_ms, end_ms)."""
    return conn.execute(
        "SELECT canteen_id, method, sum(count) AS count, sum(amount_fen) AS amount_fen, "
        "sum(subsidy_fen) AS subsidy_fen, sum(self_fen) AS self_fen FROM sale_days "
        "WHERE day_ms >= ? AND day_ms < ? GROUP BY canteen_id, method",
        (start_ms, end_ms),
    ).fetchall()


def amounts(conn: sqlite3.Connection, start_ms: int, end_ms: int) -> dict[int, int]:
    """Slot start → the amount of every canteen's sales in that slot, for [start_ms, end_ms)."""
    return {
        int(r[0]): int(r[1])
        for r in conn.execute(
            "SELECT slot_ms, sum(amount_fen) FROM sale_slots WHERE slot_ms >= ? AND slot_ms < ? "
            "GROUP BY slot_ms",
            (start_ms, end_ms),
        )
    }
