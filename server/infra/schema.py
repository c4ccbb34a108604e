"""The server's database schema, as an ordered list of migrations.

``PRAGMA user_version`` records how many have run; :func:`server.infra.db.migrate` applies the
rest in one transaction each. Tables are STRICT so a REAL can never sneak into a fen column,
and every money column is ``INTEGER``. Append new migrations; never edit an applied one.
"""

# A sale paid from the purses: applied, and not digital RMB (paid by the gateway, outside the
# ledger). What settlement settles, what a canteen's payable holds, what the meal counts
# read; the one definition of that rule, for every query over ``sales`` (unaliased).
PURSE_PAID = "status = 'applied' AND method <> 'ecny'"

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
    # 3: a 'diner' role scoped to one cardholder (their own purses, sales, ratings, QR page),
    # and token revocation. SQLite cannot alter a CHECK, so the table is rebuilt.
    """
    CREATE TABLE tokens_v3 (
        token_hash    TEXT PRIMARY KEY,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'clerk', 'operator', 'auditor', 'diner')),
        unit_id       TEXT REFERENCES units(id),
        operator      TEXT,
        holder_id     TEXT REFERENCES holders(id),
        label         TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER,
        CHECK (role <> 'clerk' OR unit_id IS NOT NULL),
        CHECK (role <> 'operator' OR operator IS NOT NULL),
        CHECK (role <> 'diner' OR holder_id IS NOT NULL)
    ) STRICT;
    INSERT INTO tokens_v3(token_hash, role, unit_id, operator, label, created_at_ms)
        SELECT token_hash, role, unit_id, operator, label, created_at_ms FROM tokens;
    DROP TABLE tokens;
    ALTER TABLE tokens_v3 RENAME TO tokens;
    CREATE INDEX tokens_holder ON tokens(holder_id) WHERE holder_id IS NOT NULL;
    """
)

MIGRATIONS.append(
    # 4: registry details — the seed's attachment table per canteen (信息统计表), leavers,
    # card history, and self-purse refunds to the person's own bank account (never cash)
    """
    ALTER TABLE canteens ADD COLUMN location TEXT NOT NULL DEFAULT '';
    ALTER TABLE canteens ADD COLUMN contact TEXT NOT NULL DEFAULT '';
    ALTER TABLE canteens ADD COLUMN phone TEXT NOT NULL DEFAULT '';
    ALTER TABLE canteens ADD COLUMN service_staff INTEGER CHECK (service_staff >= 0);
    ALTER TABLE canteens ADD COLUMN seats INTEGER CHECK (seats >= 0);
    -- square metres; a measurement, never money
    ALTER TABLE canteens ADD COLUMN dining_area_m2 REAL CHECK (dining_area_m2 >= 0);
    ALTER TABLE canteens ADD COLUMN notes TEXT NOT NULL DEFAULT '';

    ALTER TABLE holders ADD COLUMN status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'left'));
    ALTER TABLE holders ADD COLUMN left_at_ms INTEGER;
    -- the person's own bank account (建行储蓄卡), the only place a self-purse refund may go
    ALTER TABLE holders ADD COLUMN bank_account TEXT;

    ALTER TABLE cards ADD COLUMN changed_at_ms INTEGER;
    ALTER TABLE cards ADD COLUMN replaced_by TEXT;

    CREATE TABLE refund_requests (
        id              INTEGER PRIMARY KEY,
        holder_id       TEXT NOT NULL REFERENCES holders(id),
        bank_account    TEXT NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
        requested_at_ms INTEGER NOT NULL,
        requested_by    TEXT NOT NULL,
        decided_at_ms   INTEGER,
        decided_by      TEXT,
        reason          TEXT NOT NULL DEFAULT '',
        amount_fen      INTEGER CHECK (amount_fen > 0),
        txn_id          INTEGER REFERENCES txns(id)
    ) STRICT;
    CREATE UNIQUE INDEX refund_requests_one_pending ON refund_requests(holder_id) WHERE status = 'pending';
    """
)

MIGRATIONS.append(
    # 5: face pay: enrolled encodings (no photo is kept) and who enrolled/withdrew when
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

MIGRATIONS.append(
    # 6: QR payment credentials (public keys only; private keys are derived from the server
    # key when needed), every sale credential seen (a counter used twice is caught), and the
    # incidents that found
    """
    CREATE TABLE qr_credentials (
        id                     TEXT PRIMARY KEY,
        holder_id              TEXT NOT NULL REFERENCES holders(id),
        card_id                TEXT NOT NULL REFERENCES cards(card_id),
        public_key             TEXT NOT NULL UNIQUE,
        issued_at_ms           INTEGER NOT NULL,
        expires_at_ms          INTEGER NOT NULL,
        offline_allowance_fen  INTEGER NOT NULL CHECK (offline_allowance_fen >= 0),
        revoked_at_ms          INTEGER,
        revoked_reason         TEXT,
        next_counter           INTEGER NOT NULL DEFAULT 1
    ) STRICT;
    CREATE INDEX qr_credentials_holder ON qr_credentials(holder_id);

    -- kind 'qr': subject = the credential's public key; 'sun': subject = the card's UID
    CREATE TABLE credential_uses (
        kind         TEXT NOT NULL,
        subject      TEXT NOT NULL,
        counter      INTEGER NOT NULL,
        terminal_id  TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        at_ms        INTEGER NOT NULL,
        PRIMARY KEY (kind, subject, counter)
    ) STRICT;

    CREATE TABLE credential_incidents (
        id           INTEGER PRIMARY KEY,
        kind         TEXT NOT NULL,
        subject      TEXT NOT NULL,
        counter      INTEGER,
        holder_id    TEXT,
        card_id      TEXT,
        first_sale   TEXT,
        sale         TEXT NOT NULL,
        amount_fen   INTEGER NOT NULL,
        action       TEXT NOT NULL,
        at_ms        INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX credential_incidents_time ON credential_incidents(at_ms);
    """
)

MIGRATIONS.append(
    # 7: digital RMB — the sale a terminal made for each gateway order, the gateway's own
    # result callbacks, and refunds made through the gateway. No ledger entries: the money
    # settles between the diner's wallet and the canteen's merchant account.
    """
    CREATE TABLE ecny_sales (
        order_no        TEXT PRIMARY KEY,
        terminal_id     TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        canteen_id      TEXT NOT NULL,
        amount_fen      INTEGER NOT NULL CHECK (amount_fen > 0),
        occurred_at_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX ecny_sales_canteen_time ON ecny_sales(canteen_id, occurred_at_ms);

    CREATE TABLE ecny_payments (
        order_no        TEXT PRIMARY KEY,
        trade_no        TEXT NOT NULL,
        amount_fen      INTEGER NOT NULL CHECK (amount_fen > 0),
        refunded_fen    INTEGER NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0),
        status          TEXT NOT NULL,
        paid_at_ms      INTEGER NOT NULL,
        notified_at_ms  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE ecny_refunds (
        refund_no   TEXT PRIMARY KEY,
        order_no    TEXT NOT NULL REFERENCES ecny_sales(order_no),
        amount_fen  INTEGER NOT NULL CHECK (amount_fen > 0),
        at_ms       INTEGER NOT NULL,
        by_role     TEXT NOT NULL,
        reason      TEXT NOT NULL DEFAULT ''
    ) STRICT;
    """
)

MIGRATIONS.append(
    # 8: money — payees, allocations, quality, settlement periods and statements, late sales,
    #    year-end clearings, ratings; sales learn which part of their subsidy was clawed back
    #    from a year-end refund; a covering index lets settlement read a quarter without
    #    touching the sale rows.
    f"""
    CREATE TABLE operators (
        name          TEXT PRIMARY KEY,          -- as stored in canteens.operator
        company_name  TEXT NOT NULL DEFAULT '',
        bank_name     TEXT NOT NULL DEFAULT '',
        bank_account  TEXT NOT NULL DEFAULT '',
        contact       TEXT NOT NULL DEFAULT '',
        phone         TEXT NOT NULL DEFAULT ''
    ) STRICT;

    CREATE TABLE allocations (
        unit_id         TEXT NOT NULL REFERENCES units(id),
        quarter         TEXT NOT NULL,
        per_person_fen  INTEGER NOT NULL CHECK (per_person_fen > 0),
        headcount       INTEGER NOT NULL CHECK (headcount >= 0),
        total_fen       INTEGER NOT NULL CHECK (total_fen = per_person_fen * headcount),
        at_ms           INTEGER NOT NULL,
        due_ms          INTEGER NOT NULL,
        txn_id          INTEGER NOT NULL REFERENCES txns(id),
        PRIMARY KEY (unit_id, quarter)
    ) STRICT;
    CREATE INDEX allocations_txn ON allocations(txn_id);

    CREATE TABLE quality_bands (
        canteen_id  TEXT PRIMARY KEY REFERENCES canteens(id),
        bands_json  TEXT NOT NULL
    ) STRICT;

    CREATE TABLE quality_scores (
        canteen_id     TEXT NOT NULL REFERENCES canteens(id),
        quarter        TEXT NOT NULL,
        score          INTEGER NOT NULL CHECK (score BETWEEN 0 AND 100),
        entered_at_ms  INTEGER NOT NULL,
        entered_by     TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (canteen_id, quarter)
    ) STRICT;

    CREATE TABLE ratings (
        terminal_id  TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        holder_id    TEXT NOT NULL,
        canteen_id   TEXT NOT NULL,
        quarter      TEXT NOT NULL,
        service      INTEGER NOT NULL CHECK (service BETWEEN 1 AND 5),
        food         INTEGER NOT NULL CHECK (food BETWEEN 1 AND 5),
        comment      TEXT NOT NULL DEFAULT '',
        at_ms        INTEGER NOT NULL,
        PRIMARY KEY (terminal_id, seq),
        FOREIGN KEY (terminal_id, seq) REFERENCES sales(terminal_id, seq)
    ) STRICT;
    CREATE INDEX ratings_canteen_quarter ON ratings(canteen_id, quarter);

    CREATE TABLE settlement_periods (
        quarter        TEXT PRIMARY KEY,
        start_ms       INTEGER NOT NULL,
        end_ms         INTEGER NOT NULL,
        closed_at_ms   INTEGER NOT NULL,
        forced         INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
        laggards_json  TEXT NOT NULL DEFAULT '[]'
    ) STRICT;

    CREATE TABLE statements (
        quarter          TEXT NOT NULL REFERENCES settlement_periods(quarter),
        canteen_id       TEXT NOT NULL REFERENCES canteens(id),
        sales_count      INTEGER NOT NULL,
        gross_fen        INTEGER NOT NULL CHECK (gross_fen >= 0),
        adjustments_fen  INTEGER NOT NULL CHECK (adjustments_fen >= 0),
        withheld_fen     INTEGER NOT NULL CHECK (withheld_fen >= 0),
        settlement_fen   INTEGER NOT NULL,
        fee_fen          INTEGER NOT NULL CHECK (fee_fen >= 0),
        net_fen          INTEGER NOT NULL CHECK (net_fen >= 0),
        pay_pct          INTEGER NOT NULL,
        payee            TEXT NOT NULL,
        txn_id           INTEGER REFERENCES txns(id),
        statement_json   TEXT NOT NULL,
        digest           TEXT NOT NULL,          -- sha256 of statement_json, checked by `check`
        PRIMARY KEY (quarter, canteen_id),
        CHECK (gross_fen + adjustments_fen = withheld_fen + fee_fen + net_fen),
        CHECK (settlement_fen = fee_fen + net_fen)
    ) STRICT;

    -- a purse-paid sale that arrived after its quarter was closed: the next statement's
    -- adjustment line (statement_quarter says which statement took it)
    CREATE TABLE late_sales (
        terminal_id        TEXT NOT NULL,
        seq                INTEGER NOT NULL,
        canteen_id         TEXT NOT NULL,
        occurred_at_ms     INTEGER NOT NULL,
        amount_fen         INTEGER NOT NULL CHECK (amount_fen > 0),
        statement_quarter  TEXT,
        PRIMARY KEY (terminal_id, seq)
    ) STRICT;
    CREATE INDEX late_sales_open ON late_sales(statement_quarter);

    CREATE TABLE clearings (
        year           INTEGER PRIMARY KEY,
        cutoff_ms      INTEGER NOT NULL,
        refund_to      TEXT NOT NULL CHECK (refund_to IN ('unit', 'city_finance')),
        at_ms          INTEGER NOT NULL,
        txn_id         INTEGER REFERENCES txns(id),
        forced         INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
        laggards_json  TEXT NOT NULL DEFAULT '[]'
    ) STRICT;

    -- per holder and paying unit: what the clearing took, and what late sales dated before
    -- the cutoff later took back from that refund
    CREATE TABLE clearing_lines (
        year             INTEGER NOT NULL REFERENCES clearings(year),
        holder_id        TEXT NOT NULL,
        unit_id          TEXT NOT NULL,
        rank             INTEGER NOT NULL,
        refund_account   TEXT NOT NULL,
        amount_fen       INTEGER NOT NULL CHECK (amount_fen > 0),
        clawed_back_fen  INTEGER NOT NULL DEFAULT 0 CHECK (clawed_back_fen BETWEEN 0 AND amount_fen),
        PRIMARY KEY (year, holder_id, unit_id)
    ) STRICT;

    ALTER TABLE sales ADD COLUMN cleared_subsidy_fen INTEGER NOT NULL DEFAULT 0;

    CREATE INDEX sales_settle ON sales(canteen_id, occurred_at_ms, unit_id, amount_fen)
        WHERE {PURSE_PAID};
    """
)

MIGRATIONS.append(
    # 9: a holder's sales by time — the meals of one day for the meal limit across
    # terminals (server.downstream.changes.meals_of_day) read a day's range instead of a whole history;
    # it serves every lookup by holder, so it replaces the holder-only index
    """
    CREATE INDEX sales_holder_time ON sales(holder_id, occurred_at_ms);
    DROP INDEX sales_holder;
    """
)

MIGRATIONS.append(
    # 10: who changed a cardholder's bank account when (masked old and new), and the first of
    # the two approvals a refund to a recently changed account needs (server.registry.leavers)
    """
    CREATE TABLE bank_account_changes (
        id          INTEGER PRIMARY KEY,
        holder_id   TEXT NOT NULL REFERENCES holders(id),
        at_ms       INTEGER NOT NULL,
        changed_by  TEXT NOT NULL,
        old_masked  TEXT,
        new_masked  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX bank_account_changes_holder ON bank_account_changes(holder_id, at_ms);
    ALTER TABLE refund_requests ADD COLUMN first_approved_by TEXT;
    ALTER TABLE refund_requests ADD COLUMN first_approved_at_ms INTEGER;
    """
)

MIGRATIONS.append(
    # 11: hardening (issue 11) — tokens get a public id (to list and revoke them by) and an
    # expiry; signed terminal HTTP requests carry a nonce, remembered while the request's
    # time is still acceptable, so a captured request cannot be replayed
    """
    ALTER TABLE tokens ADD COLUMN id TEXT;
    ALTER TABLE tokens ADD COLUMN expires_at_ms INTEGER;
    UPDATE tokens SET id = 'tok' || substr(token_hash, 1, 12);
    -- tokens issued before expiry existed: 90 more days from the upgrade, then they lapse
    UPDATE tokens SET expires_at_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 90 * 86400000;
    CREATE UNIQUE INDEX tokens_id ON tokens(id);

    CREATE TABLE terminal_nonces (
        terminal_id   TEXT NOT NULL,
        nonce         TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        PRIMARY KEY (terminal_id, nonce)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX terminal_nonces_expiry ON terminal_nonces(expires_at_ms);
    """
)

# migration 12's tables, shared by PostgreSQL's own version of that migration
# (server.infra.schema_pg.OVERRIDES: only the trigger differs)
QUARANTINE_TABLES = """
    CREATE TABLE quarantined_sales (
        terminal_id        TEXT NOT NULL,
        seq                INTEGER NOT NULL,
        canteen_id         TEXT NOT NULL,
        reason             TEXT NOT NULL,
        detail             TEXT NOT NULL DEFAULT '',
        amount_fen         INTEGER NOT NULL,
        occurred_at_ms     INTEGER NOT NULL,
        quarantined_at_ms  INTEGER NOT NULL,
        sale_json          TEXT NOT NULL,
        state              TEXT NOT NULL DEFAULT 'pending'
                           CHECK (state IN ('pending', 'accepted', 'rejected')),
        decided_at_ms      INTEGER,
        decided_by         TEXT,
        decision_note      TEXT,
        PRIMARY KEY (terminal_id, seq)
    ) STRICT;
    CREATE INDEX quarantined_state_time ON quarantined_sales(state, quarantined_at_ms);
    CREATE INDEX quarantined_terminal_time ON quarantined_sales(terminal_id, quarantined_at_ms);

    CREATE TABLE config_history (
        version      INTEGER NOT NULL,
        at_ms        INTEGER NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('canteen', 'settings')),
        canteen_id   TEXT NOT NULL DEFAULT '',
        config_json  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX config_history_key ON config_history(kind, canteen_id, at_ms);
"""

MIGRATIONS.append(
    # 12: sale quarantine (issue 11). ``quarantined_sales``: sales the server held back for
    # an admin's review (server.sales.plausibility); the sale's ``sales`` row keeps its key
    # (so every copy is a duplicate) with status 'rejected' and the quarantine reason until
    # an admin accepts it (the row becomes the applied sale) or rejects it for good.
    # ``config_history``: every canteen config and city-wide settings change as terminals
    # got it, with its time, so a sale is checked against the prices and limits in force
    # when it was made. Filled from the delta log by a trigger (and backfilled here), so
    # whoever records a canteen or settings delta keeps the history without knowing of it.
    QUARANTINE_TABLES
    + """
    CREATE TRIGGER deltas_config_history AFTER INSERT ON deltas
    WHEN NEW.changes_json LIKE '%"kind":"canteen"%' OR NEW.changes_json LIKE '%"kind":"settings"%'
    BEGIN
        INSERT INTO config_history(version, at_ms, kind, canteen_id, config_json)
        SELECT NEW.version, NEW.at_ms, json_extract(value, '$.kind'),
               coalesce(json_extract(value, '$.canteen_id'), ''), json_extract(value, '$.config')
        FROM json_each(NEW.changes_json)
        WHERE json_extract(value, '$.kind') IN ('canteen', 'settings');
    END;

    INSERT INTO config_history(version, at_ms, kind, canteen_id, config_json)
    SELECT d.version, d.at_ms, json_extract(j.value, '$.kind'),
           coalesce(json_extract(j.value, '$.canteen_id'), ''), json_extract(j.value, '$.config')
    FROM deltas d, json_each(d.changes_json) j
    WHERE (d.changes_json LIKE '%"kind":"canteen"%' OR d.changes_json LIKE '%"kind":"settings"%')
      AND json_extract(j.value, '$.kind') IN ('canteen', 'settings');
    """
)

MIGRATIONS.append(
    # 13: payment PINs above the no-PIN limit (issue 12, server.registry.pins).
    # ``holder_pins``: one salted scrypt hash per cardholder (never the PIN), the failed
    # tries since the last success and, after five, the time the lock ends (next midnight,
    # Asia/Shanghai). ``pin_approvals``: an online PIN check that passed, bound to one card,
    # terminal and amount; ``sale_id`` records the one sale that used it.
    """
    CREATE TABLE holder_pins (
        holder_id        TEXT PRIMARY KEY REFERENCES holders(id),
        hash_hex         TEXT NOT NULL,
        salt_hex         TEXT NOT NULL,
        params           TEXT NOT NULL,
        failed_tries     INTEGER NOT NULL DEFAULT 0,
        locked_until_ms  INTEGER,
        updated_at_ms    INTEGER NOT NULL,
        updated_by       TEXT NOT NULL
    ) STRICT;

    CREATE TABLE pin_approvals (
        approval_id    TEXT PRIMARY KEY,
        holder_id      TEXT NOT NULL,
        card_id        TEXT NOT NULL,
        terminal_id    TEXT NOT NULL,
        amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
        issued_at_ms   INTEGER NOT NULL,
        expires_at_ms  INTEGER NOT NULL,
        sale_id        TEXT
    ) STRICT;
    """
)

MIGRATIONS.append(
    # 14: year-end clearing by year (issue 12): subsidy purses are per year
    # (holder:<id>:subsidy:<YYYY>); the balance an ack carries names the year of its subsidy
    # and the next year's subsidy, so a duplicate's answer repeats them
    """
    ALTER TABLE sales ADD COLUMN balance_subsidy_year INTEGER;
    ALTER TABLE sales ADD COLUMN balance_next_subsidy_fen INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sales ADD COLUMN balance_expired_subsidy_fen INTEGER NOT NULL DEFAULT 0;
    """
)

MIGRATIONS.append(
    # 15: the canteen table's 用餐人数 (how many people eat there), kept like seats and area
    """
    ALTER TABLE canteens ADD COLUMN diners INTEGER CHECK (diners >= 0);
    """
)

MIGRATIONS.append(
    # 16: the web console's log-in (issue 14, server.web.accounts). ``web_accounts``: a staff
    # member (user name, one of the API's roles and its scope) or a diner (their holder; the
    # password is set through a one-time activation code a clerk prints). Passwords and
    # activation codes are kept only as salted slow hashes; failed log-ins are counted and
    # lock the account for a while. ``web_sessions``: a signed-in browser (the SHA-256 of its
    # random session id) and when it was last seen, for the idle timeout. ``web_login_events``:
    # every log-in, failure, lock, password change and activation, for the bureau's records.
    # ``sales_time``: the dashboard reads today's sales of every canteen by time;
    # ``holders_staff_no``: people are found and listed by 工号 (the console's search, a diner's
    # log-in); ``holders_unit_status``: the allocation report counts each unit's active staff.
    """
    CREATE TABLE web_accounts (
        id                      INTEGER PRIMARY KEY,
        kind                    TEXT NOT NULL CHECK (kind IN ('staff', 'diner')),
        login                   TEXT NOT NULL,
        role                    TEXT NOT NULL
                                CHECK (role IN ('admin', 'clerk', 'operator', 'auditor', 'diner')),
        unit_id                 TEXT REFERENCES units(id),
        operator                TEXT,
        holder_id               TEXT REFERENCES holders(id),
        display_name            TEXT NOT NULL DEFAULT '',
        password_hash           TEXT,
        must_change             INTEGER NOT NULL DEFAULT 0 CHECK (must_change IN (0, 1)),
        failed_logins           INTEGER NOT NULL DEFAULT 0,
        locked_until_ms         INTEGER,
        activation_hash         TEXT,
        activation_expires_ms   INTEGER,
        created_at_ms           INTEGER NOT NULL,
        password_changed_at_ms  INTEGER,
        disabled                INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        UNIQUE (kind, login),
        CHECK ((kind = 'diner') = (role = 'diner')),
        CHECK (role <> 'clerk' OR unit_id IS NOT NULL),
        CHECK (role <> 'operator' OR operator IS NOT NULL),
        CHECK (role <> 'diner' OR holder_id IS NOT NULL)
    ) STRICT;

    CREATE TABLE web_sessions (
        id_hash        TEXT PRIMARY KEY,
        account_id     INTEGER NOT NULL REFERENCES web_accounts(id),
        created_at_ms  INTEGER NOT NULL,
        last_seen_ms   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX web_sessions_account ON web_sessions(account_id);

    CREATE TABLE web_login_events (
        id          INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        login       TEXT NOT NULL,
        account_id  INTEGER,
        event       TEXT NOT NULL,
        remote      TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE INDEX web_login_events_time ON web_login_events(at_ms);

    CREATE INDEX sales_time ON sales(occurred_at_ms);
    CREATE INDEX holders_staff_no ON holders(staff_no);
    CREATE INDEX holders_unit_status ON holders(unit_id, status);
    """
)

MIGRATIONS.append(
    # 17: signed updates (issue 15, server.registry.updates). ``update_bundles``: each signed
    # bundle the server holds (terminal software or board firmware), checked against the
    # release key when added, its file in the data folder's updates/. ``update_offers``: who
    # is offered which bundle — a canteen's terminals or the fleet, to ``stage_pct`` percent
    # of them chosen by a hash of the terminal id (server.downstream.update_offers); widening
    # a stage updates the row. ``update_reports``: what each terminal reported (installed,
    # running, refused with a code, rolled back), once per message.
    """
    CREATE TABLE update_bundles (
        kind           TEXT NOT NULL CHECK (kind IN ('terminal', 'firmware')),
        version        TEXT NOT NULL,
        min_version    TEXT NOT NULL,
        sha256         TEXT NOT NULL,
        size           INTEGER NOT NULL CHECK (size > 0),
        file_name      TEXT NOT NULL,
        created_at_ms  INTEGER NOT NULL,
        added_at_ms    INTEGER NOT NULL,
        PRIMARY KEY (kind, version)
    ) STRICT;

    CREATE TABLE update_offers (
        id               INTEGER PRIMARY KEY,
        kind             TEXT NOT NULL,
        version          TEXT NOT NULL,
        canteen_id       TEXT REFERENCES canteens(id),
        stage_pct        INTEGER NOT NULL CHECK (stage_pct BETWEEN 1 AND 100),
        offered_at_ms    INTEGER NOT NULL,
        updated_at_ms    INTEGER NOT NULL,
        withdrawn_at_ms  INTEGER,
        FOREIGN KEY (kind, version) REFERENCES update_bundles(kind, version)
    ) STRICT;

    CREATE TABLE update_reports (
        msg_id          TEXT PRIMARY KEY,
        terminal_id     TEXT NOT NULL,
        kind            TEXT NOT NULL,
        version         TEXT NOT NULL,
        state           TEXT NOT NULL,
        running         TEXT NOT NULL,
        code            TEXT,
        detail          TEXT,
        sent_at_ms      INTEGER NOT NULL,
        received_at_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX update_reports_terminal ON update_reports(terminal_id, kind, sent_at_ms);
    """
)

MIGRATIONS.append(
    # 18: terminals' day closes (日结, Z-reports, issue 13; server.closing.day_closes): one
    # row per (terminal, number) as the terminal sent it; the comparison with the sales the
    # server holds for its sequence numbers is made when asked, never stored
    """
    CREATE TABLE day_closes (
        terminal_id      TEXT NOT NULL,
        number           INTEGER NOT NULL CHECK (number >= 1),
        canteen_id       TEXT NOT NULL,
        business_day     TEXT NOT NULL,
        closed_at_ms     INTEGER NOT NULL,
        seq_from         INTEGER NOT NULL,
        seq_to           INTEGER NOT NULL,
        sales_count      INTEGER NOT NULL,
        sales_fen        INTEGER NOT NULL,
        reversals_count  INTEGER NOT NULL DEFAULT 0,
        reversals_fen    INTEGER NOT NULL DEFAULT 0,
        report_json      TEXT NOT NULL,
        received_at_ms   INTEGER NOT NULL,
        PRIMARY KEY (terminal_id, number)
    ) STRICT;
    CREATE INDEX day_closes_day ON day_closes(business_day, terminal_id);
    """
)

MIGRATIONS.append(
    # 19: backups and restores (issue 15, server.infra.backup). ``backups``: every online
    # backup taken of this database, with the highest sale of each terminal it holds with no
    # gap before it (``marks_json``: {"T0001": 1234}); a terminal may prune its journal up to
    # the mark of the oldest backup still kept (``removed_at_ms`` NULL and its folder still
    # there). ``restores``: each time this database was put back from a backup; ``epoch``
    # names the restore, and ``marks_json`` what the restored database held per terminal, so
    # terminals resend the sales acknowledged after it (server.downstream.backup_marks).
    """
    CREATE TABLE backups (
        backup_id      TEXT PRIMARY KEY,
        taken_at_ms    INTEGER NOT NULL,
        location       TEXT NOT NULL,
        sha256         TEXT NOT NULL,
        bytes          INTEGER NOT NULL CHECK (bytes > 0),
        marks_json     TEXT NOT NULL,
        removed_at_ms  INTEGER
    ) STRICT;
    CREATE INDEX backups_kept ON backups(taken_at_ms) WHERE removed_at_ms IS NULL;

    CREATE TABLE restores (
        epoch           TEXT PRIMARY KEY,
        restored_at_ms  INTEGER NOT NULL,
        backup_id       TEXT NOT NULL,
        taken_at_ms     INTEGER NOT NULL,
        marks_json      TEXT NOT NULL,
        delta_from      INTEGER NOT NULL,
        delta_to        INTEGER NOT NULL
    ) STRICT;
    """
)

MIGRATIONS.append(
    # 20: reversals (冲正, issue 13) — a record of their own, never an edit of the sale.
    # ``reversals``: every reversal a terminal sent (applied, pending until its sale arrives,
    # or rejected with a reason), keyed like sales by (terminal, seq) + uuid; a sale is
    # reversed at most once (the partial unique index). ``refunded_subsidy_fen``: the part
    # of the returned subsidy that went to a year-end refund instead of the purse (its year
    # was cleared meanwhile). ``late_reversals``: applied after the quarter of their sale
    # was settled, so the next statement carries them as negative adjustment lines.
    # ``statements`` is rebuilt without the non-negative checks on adjustments, withholding,
    # fee and net: a quarter whose late reversals outweigh its sales settles negative (the
    # operator gives back what it was paid for them); gross stays >= 0 and the sums hold.
    """
    CREATE TABLE reversals (
        terminal_id           TEXT NOT NULL,
        seq                   INTEGER NOT NULL,
        uuid                  TEXT NOT NULL UNIQUE,
        sale_seq              INTEGER NOT NULL,
        sale_uuid             TEXT NOT NULL,
        canteen_id            TEXT NOT NULL,
        operator_card         TEXT NOT NULL,
        amount_fen            INTEGER NOT NULL CHECK (amount_fen > 0),
        method                TEXT NOT NULL,
        offline               INTEGER NOT NULL DEFAULT 0,
        refund_no             TEXT,
        occurred_at_ms        INTEGER NOT NULL,
        received_at_ms        INTEGER NOT NULL,
        status                TEXT NOT NULL CHECK (status IN ('applied', 'pending', 'rejected')),
        reason                TEXT,
        holder_id             TEXT,
        unit_id               TEXT,
        subsidy_fen           INTEGER NOT NULL DEFAULT 0 CHECK (subsidy_fen >= 0),
        self_fen              INTEGER NOT NULL DEFAULT 0 CHECK (self_fen >= 0),
        refunded_subsidy_fen  INTEGER NOT NULL DEFAULT 0 CHECK (refunded_subsidy_fen >= 0),
        txn_id                INTEGER REFERENCES txns(id),
        applied_at_ms         INTEGER,
        balance_subsidy_fen   INTEGER,
        balance_self_fen      INTEGER,
        balance_version       INTEGER,
        balance_subsidy_year  INTEGER,
        balance_next_subsidy_fen     INTEGER NOT NULL DEFAULT 0,
        balance_expired_subsidy_fen  INTEGER NOT NULL DEFAULT 0,
        reversal_json         TEXT NOT NULL,
        PRIMARY KEY (terminal_id, seq)
    ) STRICT;
    CREATE UNIQUE INDEX reversals_once ON reversals(terminal_id, sale_seq) WHERE status <> 'rejected';
    CREATE INDEX reversals_canteen_time ON reversals(canteen_id, occurred_at_ms);
    CREATE INDEX reversals_holder_time ON reversals(holder_id, occurred_at_ms);
    CREATE INDEX reversals_waiting ON reversals(terminal_id, sale_seq) WHERE status = 'pending';
    CREATE INDEX reversals_sale ON reversals(terminal_id, sale_seq, status);

    CREATE TABLE late_reversals (
        terminal_id        TEXT NOT NULL,
        seq                INTEGER NOT NULL,
        canteen_id         TEXT NOT NULL,
        occurred_at_ms     INTEGER NOT NULL,
        amount_fen         INTEGER NOT NULL CHECK (amount_fen > 0),
        statement_quarter  TEXT,
        PRIMARY KEY (terminal_id, seq)
    ) STRICT;
    CREATE INDEX late_reversals_open ON late_reversals(statement_quarter);

    CREATE TABLE statements_v20 (
        quarter          TEXT NOT NULL REFERENCES settlement_periods(quarter),
        canteen_id       TEXT NOT NULL REFERENCES canteens(id),
        sales_count      INTEGER NOT NULL,
        gross_fen        INTEGER NOT NULL CHECK (gross_fen >= 0),
        adjustments_fen  INTEGER NOT NULL,
        withheld_fen     INTEGER NOT NULL,
        settlement_fen   INTEGER NOT NULL,
        fee_fen          INTEGER NOT NULL,
        net_fen          INTEGER NOT NULL,
        pay_pct          INTEGER NOT NULL,
        payee            TEXT NOT NULL,
        txn_id           INTEGER REFERENCES txns(id),
        statement_json   TEXT NOT NULL,
        digest           TEXT NOT NULL,
        PRIMARY KEY (quarter, canteen_id),
        CHECK (gross_fen + adjustments_fen = withheld_fen + fee_fen + net_fen),
        CHECK (settlement_fen = fee_fen + net_fen)
    ) STRICT;
    INSERT INTO statements_v20 SELECT quarter, canteen_id, sales_count, gross_fen, adjustments_fen,
        withheld_fen, settlement_fen, fee_fen, net_fen, pay_pct, payee, txn_id, statement_json, digest
        FROM statements;
    DROP TABLE statements;
    ALTER TABLE statements_v20 RENAME TO statements;
    """
)

# An applied reversal that gave money back to the purses (its sale was purse-paid and had
# moved money): what lowers a canteen's payable and gross, for every query over
# ``reversals`` (unaliased). A digital RMB reversal (the gateway refunded it) and one that
# only resolved a quarantined sale (nothing had moved) give back nothing here.
REVERSAL_PURSE_PAID = "status = 'applied' AND subsidy_fen + self_fen > 0"


def not_reversed_sql(sales: str = "sales") -> str:
    """SQL condition: the sale (``sales``: the table or its alias) has no applied reversal —
    for reports and meal counts that show what was sold and kept (the sale row itself is
    never edited)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM reversals rv WHERE rv.terminal_id = {sales}.terminal_id "
        f"AND rv.sale_seq = {sales}.seq AND rv.status = 'applied')"
    )


MIGRATIONS.append(
    # 21: operations (issue 15). ``enrolments``: one-time enrolment codes (only their
    # SHA-256 is kept) that reserve a terminal id for a canteen until used, cancelled or
    # expired.
    # ``terminals``: a key rotation in progress (``next_secret_hex`` offered, not yet used by
    # the terminal), the key before the current one and until when it is still accepted,
    # and the fleet view's state changes and last heartbeat by the server's clock.
    """
    CREATE TABLE enrolments (
        code_hash        TEXT PRIMARY KEY,
        terminal_id      TEXT NOT NULL UNIQUE,
        canteen_id       TEXT NOT NULL REFERENCES canteens(id),
        broker_url       TEXT NOT NULL,
        server_url       TEXT NOT NULL,
        created_at_ms    INTEGER NOT NULL,
        expires_at_ms    INTEGER NOT NULL,
        used_at_ms       INTEGER,
        used_by          TEXT,
        cancelled_at_ms  INTEGER
    ) STRICT;

    ALTER TABLE terminals ADD COLUMN next_secret_hex TEXT;
    ALTER TABLE terminals ADD COLUMN rotation_started_ms INTEGER;
    ALTER TABLE terminals ADD COLUMN previous_secret_hex TEXT;
    ALTER TABLE terminals ADD COLUMN previous_until_ms INTEGER;
    ALTER TABLE terminals ADD COLUMN state_since_ms INTEGER;
    ALTER TABLE terminals ADD COLUMN last_seen_ms INTEGER;
    """
)

MIGRATIONS.append(
    # 22: an import file uploaded to the web console, kept between its preview and the confirm
    # (server.web.imports): by who uploaded it, what kind of import and the SHA-256 of its
    # bytes; ``text`` is the file as read (UTF-8 or GBK decoded), ``preview`` the digest of the
    # report the preview showed, so the confirm applies exactly what was previewed or nothing.
    # Removed when confirmed, replaced by the next upload of the same kind, gone after a day.
    """
    CREATE TABLE web_uploads (
        account_id     INTEGER NOT NULL REFERENCES web_accounts(id),
        kind           TEXT NOT NULL,
        digest         TEXT NOT NULL,
        text           TEXT NOT NULL,
        options_json   TEXT NOT NULL DEFAULT '{}',
        preview        TEXT NOT NULL,
        created_at_ms  INTEGER NOT NULL,
        PRIMARY KEY (account_id, kind)
    ) STRICT;
    """
)

MIGRATIONS.append(
    # 23: what the web console reads fast (issue 14). ``sale_slots`` and ``sale_days``: applied
    # sales summed per 15-minute slot (per Beijing day), canteen and payment method, written
    # with the sales in the same transaction (server.sales.takings; checked against the
    # sales by `check`), filled here from the sales already applied. ``holder_name_grams``:
    # every character and pair of neighbouring characters of each cardholder's name,
    # lower-cased ASCII (server.registry.name_search), filled here the same way.
    # ``accounts_overdrawn``: the few accounts below zero, so the overdrafts are found
    # without reading every purse.
    """
    CREATE TABLE sale_slots (
        slot_ms      INTEGER NOT NULL,
        canteen_id   TEXT NOT NULL,
        method       TEXT NOT NULL,
        count        INTEGER NOT NULL,
        amount_fen   INTEGER NOT NULL,
        subsidy_fen  INTEGER NOT NULL,
        self_fen     INTEGER NOT NULL,
        PRIMARY KEY (slot_ms, canteen_id, method)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO sale_slots(slot_ms, canteen_id, method, count, amount_fen, subsidy_fen, self_fen)
    SELECT occurred_at_ms - occurred_at_ms % 900000, canteen_id, method, count(*), sum(amount_fen),
           sum(subsidy_fen), sum(self_fen)
    FROM sales WHERE status = 'applied'
    GROUP BY occurred_at_ms - occurred_at_ms % 900000, canteen_id, method;

    CREATE TABLE sale_days (
        day_ms       INTEGER NOT NULL,
        canteen_id   TEXT NOT NULL,
        method       TEXT NOT NULL,
        count        INTEGER NOT NULL,
        amount_fen   INTEGER NOT NULL,
        subsidy_fen  INTEGER NOT NULL,
        self_fen     INTEGER NOT NULL,
        PRIMARY KEY (day_ms, canteen_id, method)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO sale_days(day_ms, canteen_id, method, count, amount_fen, subsidy_fen, self_fen)
    SELECT occurred_at_ms - (occurred_at_ms + 28800000) % 86400000, canteen_id, method, count(*),
           sum(amount_fen), sum(subsidy_fen), sum(self_fen)
    FROM sales WHERE status = 'applied'
    GROUP BY occurred_at_ms - (occurred_at_ms + 28800000) % 86400000, canteen_id, method;

    CREATE TABLE holder_name_grams (
        gram       TEXT NOT NULL,
        holder_id  TEXT NOT NULL,
        PRIMARY KEY (gram, holder_id)
    ) STRICT, WITHOUT ROWID;
    WITH RECURSIVE pos(holder_id, name, i) AS (
        SELECT id, lower(name), 1 FROM holders WHERE length(name) > 0
        UNION ALL SELECT holder_id, name, i + 1 FROM pos WHERE i < length(name)
    )
    INSERT INTO holder_name_grams(gram, holder_id)
    SELECT substr(name, i, 1), holder_id FROM pos
    UNION SELECT substr(name, i, 2), holder_id FROM pos WHERE i < length(name);

    CREATE INDEX accounts_overdrawn ON accounts(kind, balance_fen) WHERE balance_fen < 0;
    """
)

MIGRATIONS.append(
    # 24: self top-up through the digital RMB gateway from the diner's phone (issue 14,
    # server.sales.ecny_topups): one row per order of ours; ``credited`` once the gateway's
    # word that it was paid for exactly ``amount_fen`` put the money on the self purse (ledger
    # txn 'topup' with ref 'ecny:<order_no>'), ``held`` when paid but not creditable (reason in
    # ``detail``), ``failed``/``closed`` as the gateway said; ``qr_text``: the merchant QR the
    # wallet app pays.
    """
    CREATE TABLE ecny_topups (
        order_no       TEXT PRIMARY KEY,
        holder_id      TEXT NOT NULL REFERENCES holders(id),
        card_id        TEXT NOT NULL,
        amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
        status         TEXT NOT NULL CHECK (status IN ('created', 'credited', 'held', 'failed', 'closed')),
        qr_text        TEXT,
        trade_no       TEXT,
        detail         TEXT NOT NULL DEFAULT '',
        created_at_ms  INTEGER NOT NULL,
        updated_at_ms  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX ecny_topups_holder ON ecny_topups(holder_id, created_at_ms);
    """
)

MIGRATIONS.append(
    # 25: the reversals waiting for their sale, found by terminal. Each ingest transaction asks
    # whether its terminals have one (server.sales.ingest), and a waiting reversal is applied
    # with its sale: ``terminal_id = ? AND status = 'pending'``. The partial index had only
    # (terminal_id, sale_seq): SQLite, without statistics, read ``reversals_sale`` instead (it
    # covers status), every reversal the terminal ever made, ~265 µs for four terminals of 300
    # reversals each; with status among its columns this one covers the question (~30 µs),
    # and still serves (terminal, sale) lookups.
    """
    DROP INDEX reversals_waiting;
    CREATE INDEX reversals_waiting ON reversals(terminal_id, status, sale_seq) WHERE status = 'pending';
    """
)
