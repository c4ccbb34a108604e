"""The terminal's local database schema (ordered migrations, ``PRAGMA user_version``).

``journal`` is the sale record of this terminal (never deleted; status moves from pending
to applied/rejected on the server's ack); ``outbox`` holds what is still unacknowledged.
``holders``/``cards``/``canteens``/``settings`` are the cache the server keeps up to date.
"""

MIGRATIONS: list[str] = [
    """
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
    """,
]

MIGRATIONS.append(
    # face pay: the enrolled-face gallery (encodings only), kept in step by 'face' changes
    """
    CREATE TABLE faces (
        face_id    TEXT PRIMARY KEY,
        holder_id  TEXT NOT NULL,
        encoding   BLOB NOT NULL
    ) STRICT;
    CREATE INDEX faces_holder ON faces(holder_id);
    """
)
