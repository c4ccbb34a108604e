"""What PostgreSQL needs beyond the translated migrations of :mod:`server.infra.schema`.

One migration history serves both databases: each migration's SQLite text is translated
(:func:`server.infra.pg_sql.translate_script`) except where SQLite's own machinery has no
textual twin — a trigger body in SQLite's JSON functions — for which :data:`OVERRIDES`
gives the PostgreSQL text of that migration number (same tables, same effect).

:data:`COMPAT` defines, in the database, the few SQLite functions the server's queries call
(``printf('%04d', …)``, ``strftime`` of a Unix time, ``typeof``, ``instr``, scalar
``max``/``min``, ``sum`` of a condition, ``group_concat`` of text), with SQLite's results, so
those queries run unchanged. Anything they are asked that SQLite would answer differently raises instead of
guessing.
"""

from __future__ import annotations

from server.infra.schema import QUARANTINE_TABLES

# bumped whenever COMPAT changes: the migrator re-runs it (CREATE OR REPLACE) on next start
COMPAT_VERSION = 3

COMPAT = r"""
-- money columns (every INTEGER column named *_fen): a whole number or an error. PostgreSQL
-- would round 1.5 into a BIGINT column on assignment; SQLite's STRICT tables refuse it, and
-- so does this domain (its CHECK sees the value before any rounding)
DO $$ BEGIN
    CREATE DOMAIN canteen_fen AS numeric
        CHECK (VALUE = trunc(VALUE) AND VALUE BETWEEN -9223372036854775808 AND 9223372036854775807);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE OR REPLACE FUNCTION canteen_not_portable(what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION 'SQLite function call not supported on PostgreSQL: %', what;
END $$;

-- printf('%04d', n) and friends: one %d with optional zero padding (a NULL prints as 0, a
-- negative number's sign counts in the width, as SQLite's printf). The supported formats are
-- tested first: with a constant format the planner folds the CASE to its arm, never
-- reaching the ELSE that raises (it would evaluate that at plan time otherwise)
CREATE OR REPLACE FUNCTION printf(fmt text, n bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN fmt = '%d' THEN coalesce(n, 0)::text
        WHEN fmt ~ '^%0[1-9]d$' THEN
            CASE WHEN coalesce(n, 0) >= 0
                 THEN lpad(coalesce(n, 0)::text,
                           greatest(substr(fmt, 3, 1)::int, length(coalesce(n, 0)::text)), '0')
                 ELSE '-' || lpad((-n)::text,
                                  greatest(substr(fmt, 3, 1)::int - 1, length((-n)::text)), '0')
            END
        ELSE canteen_not_portable('printf(' || fmt || ')')
    END
$$;

-- strftime(fmt, unix seconds, 'unixepoch'): in UTC, as SQLite (NULL seconds: NULL)
CREATE OR REPLACE FUNCTION strftime(fmt text, secs bigint, modifier text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN modifier = 'unixepoch' AND fmt !~ '%[^YmdHMS]' THEN
            to_char(to_timestamp(secs) AT TIME ZONE 'UTC',
                    replace(replace(replace(replace(replace(replace(fmt,
                        '%Y', 'YYYY'), '%m', 'MM'), '%d', 'DD'), '%H', 'HH24'), '%M', 'MI'), '%S', 'SS'))
        ELSE canteen_not_portable('strftime(' || fmt || ', ' || modifier || ')')
    END
$$;

-- strftime('%s', 'now'): the Unix time now
CREATE OR REPLACE FUNCTION strftime(fmt text, what text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN fmt = '%s' AND what = 'now' THEN floor(extract(epoch FROM now()))::bigint::text
                ELSE canteen_not_portable('strftime(' || fmt || ', ' || what || ')') END
$$;

CREATE OR REPLACE FUNCTION typeof(v anyelement) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN v IS NULL THEN 'null'
        WHEN pg_typeof(v) IN ('bigint'::regtype, 'integer'::regtype, 'smallint'::regtype,
                              'boolean'::regtype) THEN 'integer'
        WHEN pg_typeof(v) IN ('numeric'::regtype, 'canteen_fen'::regtype) THEN
            CASE WHEN v::text ~ '^-?[0-9]+$' THEN 'integer' ELSE 'real' END
        WHEN pg_typeof(v) IN ('double precision'::regtype, 'real'::regtype) THEN 'real'
        WHEN pg_typeof(v) = 'bytea'::regtype THEN 'blob'
        ELSE 'text'
    END
$$;

CREATE OR REPLACE FUNCTION instr(haystack text, needle text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT strpos(haystack, needle) $$;

-- sum(condition): SQLite counts true conditions (they are 1 and 0 there)
CREATE OR REPLACE FUNCTION canteen_sum_bool(acc bigint, v boolean) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL THEN acc ELSE coalesce(acc, 0) + v::int END
$$;
CREATE OR REPLACE AGGREGATE sum(boolean) (SFUNC = canteen_sum_bool, STYPE = bigint);

-- group_concat(text, separator): SQLite's aggregate (NULLs skipped; NULL when none)
CREATE OR REPLACE FUNCTION canteen_group_concat(acc text, v text, sep text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN v IS NULL THEN acc WHEN acc IS NULL THEN v ELSE acc || sep || v END
$$;
CREATE OR REPLACE AGGREGATE group_concat(text, text) (SFUNC = canteen_group_concat, STYPE = text);
CREATE OR REPLACE FUNCTION canteen_group_concat(acc text, v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT canteen_group_concat(acc, v, ',') $$;
CREATE OR REPLACE AGGREGATE group_concat(text) (SFUNC = canteen_group_concat, STYPE = text);

-- SQLite's scalar max/min: NULL when either side is NULL (GREATEST/LEAST skip NULLs); on
-- numeric, so a BIGINT and a money column (canteen_fen) both fit without ambiguity
DROP FUNCTION IF EXISTS max(bigint, bigint);
DROP FUNCTION IF EXISTS min(bigint, bigint);
CREATE OR REPLACE FUNCTION max(a numeric, b numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE greatest(a, b) END
$$;
CREATE OR REPLACE FUNCTION min(a numeric, b numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE least(a, b) END
$$;
"""

# migration 12's trigger keeps config_history from the delta log; PostgreSQL's version of it
# (the tables are SQLite's text itself, translated like every migration)
OVERRIDES: dict[int, str] = {
    12: QUARANTINE_TABLES
    + r"""
    CREATE FUNCTION deltas_config_history() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.changes_json LIKE '%"kind":"canteen"%' OR NEW.changes_json LIKE '%"kind":"settings"%' THEN
            INSERT INTO config_history(version, at_ms, kind, canteen_id, config_json)
            SELECT NEW.version, NEW.at_ms, j.value ->> 'kind', coalesce(j.value ->> 'canteen_id', ''),
                   (j.value -> 'config')::text
            FROM json_array_elements(NEW.changes_json::json) AS j(value)
            WHERE j.value ->> 'kind' IN ('canteen', 'settings');
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER deltas_config_history AFTER INSERT ON deltas
        FOR EACH ROW EXECUTE FUNCTION deltas_config_history();
    """,
}

# triggers the import of a copied database switches off while it copies rows (the rows the
# trigger would write are copied themselves)
TRIGGERS = {"deltas": ["deltas_config_history"]}
