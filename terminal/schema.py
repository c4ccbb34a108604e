"""The terminal's local database schema, as sqlite-utils migrations.

``journal`` is the sale record of this terminal (never deleted; status moves from pending
to applied/rejected on the server's ack); ``outbox`` holds what is still unacknowledged;
``declines`` feeds the operator's totals. ``holders``/``cards``/``canteens`` and the
``meta`` settings are the cache the server keeps up to date, and so are ``faces`` (the face
gallery) and ``qr_keys`` (QR credentials); ``qr_seen`` and ``sun_counters`` remember the QR
codes and NTAG 424 counters already used here; ``ecny_orders`` tracks digital RMB orders.

Migrations are applied in order by :data:`MIGRATIONS` (``sqlite_utils.migrations``), each
in its own transaction together with the record that it ran. The first one keeps the
STRICT tables, CHECK constraint and partial index as SQL (sqlite-utils' ``create`` has no
words for them); later ones use the sqlite-utils table API where it fits.

Older terminals ran a numbered list of SQL scripts tracked by ``PRAGMA user_version``
(1 initial, 2 faces, 3 identification, 4 digital RMB orders). Each migration that replaces
one of those scripts skips itself when that script already ran, so a database at any of
those states upgrades in place (``tests/test_terminal_store.py``).
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


def _run(db: Database, sql: str) -> None:
    for stmt in sql.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _created_by_user_version(db: Database, table: str) -> bool:
    """A terminal created before the migrations moved to sqlite-utils ran the old numbered
    list (``PRAGMA user_version``): 1 = the initial tables, 2 = faces, 3 = identification,
    4 = digital RMB orders. Such a step already ran if its first table exists."""
    return db.execute("PRAGMA user_version").fetchone()[0] >= 1 and db[table].exists()


@MIGRATIONS(name="001_initial")
def initial(db: Database) -> None:
    if _created_by_user_version(db, "journal"):
        return
    _run(db, INITIAL_SQL)


@MIGRATIONS(name="002_announced_and_meal_index")
def announced_and_meal_index(db: Database) -> None:
    """``announced``: the diner was told "approved" (see ``terminal.store``). Sales that
    exist before this migration were announced by the old code. The meal-limit count
    reads a holder's sales of the day, acknowledged ones too: it needs its own index."""
    db["journal"].add_column("announced", int, not_null_default=1)  # type: ignore[union-attr]
    db.execute("CREATE INDEX journal_unannounced ON journal(seq) WHERE announced = 0")
    db["journal"].create_index(["holder_id", "occurred_at_ms"], index_name="journal_holder_time")  # type: ignore[union-attr]


FACES_SQL = """
CREATE TABLE faces (
    face_id    TEXT PRIMARY KEY,
    holder_id  TEXT NOT NULL,
    encoding   BLOB NOT NULL
) STRICT;
CREATE INDEX faces_holder ON faces(holder_id);
"""


@MIGRATIONS(name="003_face_gallery")
def face_gallery(db: Database) -> None:
    """Face pay: the enrolled-face gallery (encodings only), kept in step by ``face``
    changes (``terminal.face_cache``). Was user_version 2."""
    if _created_by_user_version(db, "faces"):
        return
    _run(db, FACES_SQL)


IDENT_SQL = """
CREATE TABLE qr_keys (
    holder_id              TEXT PRIMARY KEY,
    public_key             TEXT NOT NULL,
    expires_at_ms          INTEGER NOT NULL,
    offline_allowance_fen  INTEGER NOT NULL
) STRICT;

CREATE TABLE qr_seen (
    public_key    TEXT NOT NULL,
    counter       INTEGER NOT NULL,
    code_time_ms  INTEGER NOT NULL,
    seen_at_ms    INTEGER NOT NULL,
    PRIMARY KEY (public_key, counter)
) STRICT;
CREATE INDEX qr_seen_time ON qr_seen(seen_at_ms);

CREATE TABLE sun_counters (
    uid           TEXT PRIMARY KEY,
    last_counter  INTEGER NOT NULL,
    seen_at_ms    INTEGER NOT NULL
) STRICT;
"""


@MIGRATIONS(name="004_identification")
def identification(db: Database) -> None:
    """Identification: QR credentials (public keys) from the server (``qr_key`` changes),
    the QR codes this terminal has accepted (a code is good once), the last SUN counter of
    each NTAG 424 card (``terminal.qr_verify``, ``terminal.card_check``). Was user_version 3."""
    if _created_by_user_version(db, "qr_keys"):
        return
    _run(db, IDENT_SQL)


ECNY_ORDERS_SQL = """
CREATE TABLE ecny_orders (
    order_no       TEXT PRIMARY KEY,
    amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
    kind           TEXT NOT NULL,
    meal_period    TEXT,
    items_json     TEXT NOT NULL DEFAULT '[]',
    status         TEXT NOT NULL
                   CHECK (status IN ('created', 'paid', 'journaled', 'failed', 'reversed')),
    created_at_ms  INTEGER NOT NULL,
    paid_at_ms     INTEGER,
    trade_no       TEXT,
    seq            INTEGER,
    reason         TEXT
) STRICT;
"""


@MIGRATIONS(name="005_ecny_orders")
def ecny_orders(db: Database) -> None:
    """Digital RMB orders this terminal started (``terminal.ecny``). A row is written
    before the gateway is asked to charge, so a crash at any point leaves a trace to settle
    on restart: an order paid at the gateway but never journaled (the diner never saw
    "paid") is refunded. Was user_version 4."""
    if _created_by_user_version(db, "ecny_orders"):
        return
    _run(db, ECNY_ORDERS_SQL)


@MIGRATIONS(name="006_holder_meals")
def holder_meals(db: Database) -> None:
    """The meals the server has applied for a holder on their latest meal day, all
    terminals together (the ``meals`` of a holder change): the meal limit counts them.
    ``meals_day`` (YYYY-MM-DD) keeps an older day's count from replacing a newer one."""
    db["holders"].add_column("meals_day", str)  # type: ignore[union-attr]
    db["holders"].add_column("meals_json", str)  # type: ignore[union-attr]


@MIGRATIONS(name="007_subsidy_year")
def subsidy_year(db: Database) -> None:
    """Subsidy by year (年末清零, issue 12): ``subsidy_fen`` is the subsidy of
    ``subsidy_year`` and ``next_subsidy_fen`` the next year's; a sale spends only the subsidy
    of the year it is dated in (:func:`shared.spend_order.subsidy_for_year`). NULL year: a
    server that sent none (the old rule)."""
    db["holders"].add_column("subsidy_year", int)  # type: ignore[union-attr]
    db["holders"].add_column("next_subsidy_fen", int, not_null_default=0)  # type: ignore[union-attr]
    db["holders"].add_column("expired_subsidy_fen", int, not_null_default=0)  # type: ignore[union-attr]


@MIGRATIONS(name="008_day_closes")
def day_closes(db: Database) -> None:
    """The operator's day closes (日结, Z-reports, issue 13; :mod:`terminal.day_close`):
    numbered from 1, each covering this terminal's sales from the seq after the previous
    close's ``seq_to`` up to its own, kept for good. ``sent_at_ms`` / ``server_json``: when
    the server received it and what it answered (NULL until then: the sender retries)."""
    db.execute(
        """
        CREATE TABLE day_closes (
            number        INTEGER PRIMARY KEY CHECK (number >= 1),
            closed_at_ms  INTEGER NOT NULL,
            seq_from      INTEGER NOT NULL,
            seq_to        INTEGER NOT NULL,
            report_json   TEXT NOT NULL,
            sent_at_ms    INTEGER,
            server_json   TEXT
        ) STRICT
        """
    )


REVERSALS_SQL = """
CREATE TABLE reversals (
    seq             INTEGER PRIMARY KEY,
    uuid            TEXT NOT NULL UNIQUE,
    sale_seq        INTEGER NOT NULL UNIQUE REFERENCES journal(seq),
    card_id         TEXT,
    holder_id       TEXT,
    amount_fen      INTEGER NOT NULL CHECK (amount_fen > 0),
    subsidy_fen     INTEGER NOT NULL,
    self_fen        INTEGER NOT NULL,
    method          TEXT NOT NULL,
    operator_card   TEXT NOT NULL,
    offline         INTEGER NOT NULL,
    occurred_at_ms  INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'new'
                    CHECK (status IN ('new', 'waiting', 'applied', 'rejected')),
    reason          TEXT,
    announced       INTEGER NOT NULL DEFAULT 0,
    reversal_json   TEXT NOT NULL
) STRICT;
CREATE INDEX reversals_time ON reversals(occurred_at_ms);

CREATE TABLE reversal_outbox (
    seq  INTEGER PRIMARY KEY REFERENCES reversals(seq)
) STRICT;
"""


@MIGRATIONS(name="009_reversals")
def reversals(db: Database) -> None:
    """Reversals (冲正, issue 13): this terminal's reversal records (never an edit of the
    sale: a sale is reversed at most once, ``sale_seq`` is unique) and their own outbox.
    ``status``: ``new`` until the server answers, ``waiting`` while the server keeps it for
    a sale it has not received, then ``applied`` or ``rejected``; ``announced`` as in the
    journal (``terminal.reversals``)."""
    _run(db, REVERSALS_SQL)


@MIGRATIONS(name="010_journal_canonical")
def journal_canonical(db: Database) -> None:
    """``canonical = 1``: the row's ``sale_json`` is the sale's canonical JSON
    (:func:`shared.protocol.codec.canonical_json`), which the outbox sends spliced into its
    signed batch as stored; older rows (0) are decoded and encoded canonically when sent."""
    db["journal"].add_column("canonical", int, not_null_default=0)  # type: ignore[union-attr]
