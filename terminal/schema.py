"""The terminal's local database schema, as sqlite-utils migrations.

``journal`` is the sale record of this terminal (never deleted; status moves from pending
to applied/rejected on the server's ack); ``outbox`` holds what is still unacknowledged;
``declines`` feeds the operator's totals. ``holders``/``cards``/``canteens`` and the
``meta`` settings are the cache the server keeps up to date.

Migrations are applied in order by :data:`MIGRATIONS` (``sqlite_utils.migrations``), each
in its own transaction together with the record that it ran. The first one keeps the
STRICT tables, CHECK constraint and partial index as SQL (sqlite-utils' ``create`` has no
words for them); later ones use the sqlite-utils table API where it fits.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("canteen-terminal")

INITIAL_SQL = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE holders (
    holder_id    TEXT PRIMARY KEY,
    unit_id      TEXT NOT NULL,
    subsidy_fen  INTEGER NOT NULL,
    self_fen     INTEGER NOT NULL,
    blocked      INTEGER NOT NULL DEFAULT 0,
    version      INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE cards (
    card_id    TEXT PRIMARY KEY,
    holder_id  TEXT NOT NULL,
    status     TEXT NOT NULL
) STRICT;

CREATE TABLE canteens (
    canteen_id   TEXT PRIMARY KEY,
    config_json  TEXT NOT NULL
) STRICT;

CREATE TABLE journal (
    seq             INTEGER PRIMARY KEY,
    uuid            TEXT NOT NULL UNIQUE,
    card_id         TEXT,
    holder_id       TEXT,
    amount_fen      INTEGER NOT NULL,
    subsidy_fen     INTEGER NOT NULL,
    self_fen        INTEGER NOT NULL,
    method          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    meal_period     TEXT,
    visitor         INTEGER NOT NULL,
    offline         INTEGER NOT NULL,
    occurred_at_ms  INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'applied', 'rejected')),
    reason          TEXT,
    sale_json       TEXT NOT NULL
) STRICT;
CREATE INDEX journal_holder_pending ON journal(holder_id) WHERE status = 'pending';
CREATE INDEX journal_time ON journal(occurred_at_ms);

CREATE TABLE outbox (
    seq  INTEGER PRIMARY KEY REFERENCES journal(seq)
) STRICT;

CREATE TABLE declines (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    card_id     TEXT,
    method      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    meal_period TEXT
) STRICT;
CREATE INDEX declines_time ON declines(at_ms);
"""


@MIGRATIONS(name="001_initial")
def initial(db: Database) -> None:
    # a terminal created before the migrations moved to sqlite-utils has user_version 1
    # and these tables already
    if db.execute("PRAGMA user_version").fetchone()[0] >= 1 and db["journal"].exists():
        return
    for stmt in INITIAL_SQL.split(";"):
        if stmt.strip():
            db.execute(stmt)


@MIGRATIONS(name="002_announced_and_meal_index")
def announced_and_meal_index(db: Database) -> None:
    """``announced``: the diner was told "approved" (see ``terminal.store``). Sales that
    exist before this migration were announced by the old code. The meal-limit count
    reads a holder's sales of the day, acknowledged ones too: it needs its own index."""
    db["journal"].add_column("announced", int, not_null_default=1)  # type: ignore[union-attr]
    db.execute("CREATE INDEX journal_unannounced ON journal(seq) WHERE announced = 0")
    db["journal"].create_index(["holder_id", "occurred_at_ms"], index_name="journal_holder_time")  # type: ignore[union-attr]
