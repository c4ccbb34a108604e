"""The server's database schema, as an ordered list of migrations.

``PRAGMA user_version`` records how many have run; :func:`server.db.migrate` applies the
rest in one transaction each. Tables are STRICT so a REAL can never sneak into a fen column,
and every money column is ``INTEGER``. Append new migrations; never edit an applied one.
"""

MIGRATIONS: list[str] = [
    # 1: registry, ledger, sales, terminals, downstream
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    CREATE TABLE units (
        id                      TEXT PRIMARY KEY,
        name                    TEXT NOT NULL UNIQUE,
        quarterly_standard_fen  INTEGER NOT NULL DEFAULT 0 CHECK (quarterly_standard_fen >= 0)
    ) STRICT;

    CREATE TABLE canteens (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        unit_id        TEXT NOT NULL REFERENCES units(id),
        operator       TEXT NOT NULL DEFAULT '',
        self_operated  INTEGER NOT NULL DEFAULT 0 CHECK (self_operated IN (0, 1)),
        config_json    TEXT NOT NULL DEFAULT '{}'
    ) STRICT;

    CREATE TABLE holders (
        id        TEXT PRIMARY KEY,
        unit_id   TEXT NOT NULL REFERENCES units(id),
        name      TEXT NOT NULL,
        staff_no  TEXT,
        blocked   INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
        UNIQUE (unit_id, staff_no)
    ) STRICT;

    CREATE TABLE cards (
        card_id    TEXT PRIMARY KEY,
        holder_id  TEXT NOT NULL REFERENCES holders(id),
        status     TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'lost', 'retired'))
    ) STRICT;
    CREATE INDEX cards_holder ON cards(holder_id);

    -- double-entry ledger: balance_fen is derived from entries and checked against them
    CREATE TABLE accounts (
        id          TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        balance_fen INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    CREATE TABLE txns (
        id        INTEGER PRIMARY KEY,
        kind      TEXT NOT NULL,
        ref       TEXT,
        at_ms     INTEGER NOT NULL,
        memo      TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE UNIQUE INDEX txns_kind_ref ON txns(kind, ref) WHERE ref IS NOT NULL;

    CREATE TABLE entries (
        id            INTEGER PRIMARY KEY,
        txn_id        INTEGER NOT NULL REFERENCES txns(id),
        from_account  TEXT NOT NULL REFERENCES accounts(id),
        to_account    TEXT NOT NULL REFERENCES accounts(id),
        amount_fen    INTEGER NOT NULL CHECK (amount_fen > 0),
        CHECK (from_account <> to_account)
    ) STRICT;
    CREATE INDEX entries_txn ON entries(txn_id);

    CREATE TABLE terminals (
        id                TEXT PRIMARY KEY,
        canteen_id        TEXT NOT NULL REFERENCES canteens(id),
        secret_hex        TEXT NOT NULL,
        created_at_ms     INTEGER NOT NULL,
        watermark_ms      INTEGER,
        last_status_json  TEXT,
        last_status_ms    INTEGER,
        state             TEXT NOT NULL DEFAULT 'new'
    ) STRICT;

    -- every sale a terminal sent, applied or rejected: the key makes it at-most-once
    CREATE TABLE sales (
        terminal_id     TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        uuid            TEXT NOT NULL UNIQUE,
        status          TEXT NOT NULL CHECK (status IN ('applied', 'rejected')),
        reason          TEXT,
        card_id         TEXT,
        holder_id       TEXT,
        unit_id         TEXT,
        canteen_id      TEXT NOT NULL,
        amount_fen      INTEGER NOT NULL,
        subsidy_fen     INTEGER NOT NULL DEFAULT 0,
        self_fen        INTEGER NOT NULL DEFAULT 0,
        overdraft_fen   INTEGER NOT NULL DEFAULT 0,
        method          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        meal_period     TEXT,
        visitor         INTEGER NOT NULL DEFAULT 0,
        offline         INTEGER NOT NULL DEFAULT 0,
        occurred_at_ms  INTEGER NOT NULL,
        received_at_ms  INTEGER NOT NULL,
        txn_id          INTEGER REFERENCES txns(id),
        balance_subsidy_fen INTEGER,
        balance_self_fen    INTEGER,
        balance_version     INTEGER,
        items_json      TEXT,
        PRIMARY KEY (terminal_id, seq)
    ) STRICT;
    CREATE INDEX sales_canteen_time ON sales(canteen_id, occurred_at_ms);
    CREATE INDEX sales_holder ON sales(holder_id);

    -- messages refused as a whole (bad signature, malformed, unknown terminal)
    CREATE TABLE rejections (
        id           INTEGER PRIMARY KEY,
        at_ms        INTEGER NOT NULL,
        topic        TEXT NOT NULL,
        terminal_id  TEXT,
        reason       TEXT NOT NULL,
        detail       TEXT NOT NULL DEFAULT ''
    ) STRICT;

    CREATE TABLE counters (
        name   TEXT PRIMARY KEY,
        value  INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    -- downstream: versioned changes, published in order
    CREATE TABLE deltas (
        version     INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        changes_json TEXT NOT NULL
    ) STRICT;
    """,
]

MIGRATIONS.append(
    # 2: API tokens (only a hash is stored) with a role and a scope
    """
    CREATE TABLE tokens (
        token_hash  TEXT PRIMARY KEY,
        role        TEXT NOT NULL CHECK (role IN ('admin', 'clerk', 'operator', 'auditor')),
        unit_id     TEXT REFERENCES units(id),
        operator    TEXT,
        label       TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    """
)

MIGRATIONS.append(
    # face pay: enrolled encodings (no photo is kept) and who enrolled/withdrew when
    """
    CREATE TABLE faces (
        face_id        TEXT PRIMARY KEY,
        holder_id      TEXT NOT NULL REFERENCES holders(id),
        encoding       BLOB NOT NULL CHECK (length(encoding) = 512),
        face_px        INTEGER NOT NULL,
        enrolled_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX faces_holder ON faces(holder_id);

    -- the enrollment/withdrawal history: no biometric data, only that it happened
    CREATE TABLE face_events (
        id         INTEGER PRIMARY KEY,
        holder_id  TEXT NOT NULL,
        face_id    TEXT NOT NULL,
        action     TEXT NOT NULL CHECK (action IN ('enrolled', 'deleted')),
        at_ms      INTEGER NOT NULL,
        by         TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE INDEX face_events_holder ON face_events(holder_id);
    """
)
