"""The card check's one statement per verified SUN tap gives exactly the verdicts, and leaves
exactly the table, of the read-then-write it replaced (a SELECT of the last counter, judge,
then an upsert of an accepted counter) — for any sequence of taps of a few cards: genuine
reads with counters going up, down or repeating, forged reads, bare UIDs, either policy."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.ntag424 import SunError, SunKeys, SunMessage, make_url, verify_url
from terminal.card_check import CardChecker, CardVerdict, judge

KEYS = SunKeys.from_master(bytes(range(32)))
UIDS = (bytes.fromhex("04A1B2C3D4E5F6"), bytes.fromhex("04000000000001"))
BASE = "https://canteen.example/c"
SCHEMA = """CREATE TABLE sun_counters (
    uid           TEXT PRIMARY KEY,
    last_counter  INTEGER NOT NULL,
    seen_at_ms    INTEGER NOT NULL
) STRICT"""


class ReadThenWrite(CardChecker):
    """CardChecker.check as it was: the specification the one statement must match."""

    def check(self, uid_hex: str, sun_url: str | None, allow_uid_only: bool, now_ms: int) -> CardVerdict:
        sun: SunMessage | SunError | None = None
        if sun_url and self.keys is not None:
            try:
                sun = verify_url(self.keys, sun_url)
            except SunError as exc:
                sun = exc
        uid = sun.uid_hex if isinstance(sun, SunMessage) else uid_hex
        verdict = judge(uid, sun, self.last_counter(uid), allow_uid_only)
        if verdict.reason is None and verdict.counter is not None:
            self.conn.execute(
                "INSERT INTO sun_counters(uid, last_counter, seen_at_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(uid) DO UPDATE SET last_counter = excluded.last_counter, "
                "seen_at_ms = excluded.seen_at_ms",
                (verdict.card_id, verdict.counter, now_ms),
            )
        return verdict


def database() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)  # autocommit, as the terminal's store
    conn.execute(SCHEMA)
    return conn


taps = st.lists(
    st.tuples(
        st.integers(0, len(UIDS) - 1),
        st.sampled_from(["sun", "sun", "sun", "forged", "bare"]),
        st.integers(0, 6),  # counters: few, so that repeats and going back are common
        st.booleans(),  # allow_uid_only
    ),
    max_size=12,
)


def url_of(uid: bytes, how: str, counter: int) -> str | None:
    if how == "bare":
        return None
    url = make_url(BASE, KEYS, uid, counter, padding=b"\x00" * 5)
    return url if how == "sun" else url[:-2] + ("00" if not url.endswith("00") else "11")


@settings(max_examples=150, deadline=None)
@given(taps, st.booleans())
def test_one_statement_gives_the_verdicts_and_table_of_read_then_write(tapped, with_keys: bool) -> None:
    keys = KEYS if with_keys else None
    fast, spec = database(), database()
    checker, reference = CardChecker(fast, keys), ReadThenWrite(spec, keys)
    for now, (which, how, counter, allow) in enumerate(tapped, start=1000):
        uid = UIDS[which]
        url = url_of(uid, how, counter)
        got = checker.check(uid.hex().upper(), url, allow, now)
        assert got == reference.check(uid.hex().upper(), url, allow, now)
        assert not fast.in_transaction  # the statement committed, as the upsert did
    table = "SELECT uid, last_counter, seen_at_ms FROM sun_counters ORDER BY uid"
    assert fast.execute(table).fetchall() == spec.execute(table).fetchall()


def test_a_replayed_counter_writes_nothing_and_a_higher_one_replaces_it() -> None:
    conn = database()
    checker = CardChecker(conn, KEYS)
    uid = UIDS[0]
    assert checker.check("X", url_of(uid, "sun", 5), True, 1).reason is None
    assert checker.check("X", url_of(uid, "sun", 5), True, 2).reason == "card_replayed"
    assert checker.check("X", url_of(uid, "sun", 4), True, 3).reason == "card_replayed"
    assert conn.execute("SELECT last_counter, seen_at_ms FROM sun_counters").fetchall() == [(5, 1)]
    assert checker.check("X", url_of(uid, "sun", 6), True, 4).credential == f"sun:{uid.hex().upper()}:6"
    assert conn.execute("SELECT last_counter, seen_at_ms FROM sun_counters").fetchall() == [(6, 4)]
