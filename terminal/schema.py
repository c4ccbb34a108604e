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

MIGRATIONS.append(
    # 3: identification — QR credentials (public keys) from the server, the QR codes this
    # terminal has accepted (a code is good once), the last SUN counter of each NTAG 424 card
    """
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
)

MIGRATIONS.append(
    # 4: digital RMB orders this terminal started. A row is written before the gateway is
    # asked to charge, so a crash at any point leaves a trace to settle on restart: an order
    # paid at the gateway but never journaled (the diner never saw "paid") is refunded.
    """
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
)
