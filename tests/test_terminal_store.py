"""The terminal's journal and outbox: durable together, settled only by the server's ack."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shared.errors import DomainError
from shared.protocol import SaleResult
from shared.protocol.messages import Balance, decode_changes
from shared.sqlite_txn import write_txn
from terminal.store import Store
from tests.terminal_support import journal_sale

CHANGES = (
    {
        "kind": "holder",
        "holder_id": "H1",
        "unit_id": "U01",
        "subsidy_fen": 3000,
        "self_fen": 500,
        "blocked": False,
    },
    {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"},
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "t.sqlite")
    s.apply_changes(1, decode_changes(CHANGES))
    return s


def record(store: Store, amount: int = 1200) -> object:
    return journal_sale(store, amount, 1000, meal_period="lunch")


def test_journal_uses_synchronous_full(store: Store) -> None:
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_sale_and_its_outbox_row_are_written_together(store: Store) -> None:
    sale = record(store)
    assert store.pending_count() == 1
    assert store.card_state("C1").unconfirmed_fen == 1200
    assert sale.seq == 1 and record(store).seq == 2


def test_a_failed_write_leaves_neither_row(store: Store) -> None:
    store.conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(sqlite3.Error):
        record(store)
    assert store.conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    assert store.pending_count() == 0


def test_only_the_servers_ack_settles_a_sale(store: Store) -> None:
    sale = record(store)
    ok = SaleResult("T1", sale.seq, sale.uuid, "applied", None, 1200, 0, 0, "H1", Balance(1800, 500, 5))
    wrong_uuid = SaleResult("T1", sale.seq, "other", "applied")
    assert store.apply_results((wrong_uuid,), "T1")["ignored"] == 1
    assert store.pending_count() == 1
    store.apply_results((ok,), "T1")
    assert store.pending_count() == 0
    state = store.card_state("C1")
    assert (state.subsidy_fen, state.unconfirmed_fen, state.version) == (1800, 0, 5)


def test_an_older_balance_never_overwrites_a_newer_one(store: Store) -> None:
    store.apply_changes(2, decode_changes(({**CHANGES[0], "subsidy_fen": 100},)))
    sale = record(store, 50)
    store.apply_results(
        (SaleResult("T1", sale.seq, sale.uuid, "duplicate", None, 50, 0, 0, "H1", Balance(9999, 0, 1)),), "T1"
    )
    assert store.card_state("C1").subsidy_fen == 100


def test_a_rejected_sale_leaves_the_outbox_and_is_marked(store: Store) -> None:
    sale = record(store)
    store.apply_results((SaleResult("T1", sale.seq, sale.uuid, "rejected", "card_unknown"),), "T1")
    row = store.conn.execute("SELECT status, reason FROM journal").fetchone()
    assert tuple(row) == ("rejected", "card_unknown")
    assert store.pending_count() == 0


def test_the_outbox_stops_at_the_first_sale_not_yet_announced(store: Store) -> None:
    first = journal_sale(store, 10, 1000, kind="shop", announced=True)
    second = record(store)
    assert [seq for seq, _ in store.outbox_after(0, 10)] == [first.seq]
    store.mark_announced(second.seq)
    assert [seq for seq, _ in store.outbox_after(0, 10)] == [first.seq, second.seq]
    assert store.unannounced() == []


def test_a_relaxed_write_inside_a_durable_transaction_stands_or_falls_with_it(store: Store) -> None:
    # the sync agent stores "known current at" with the delta or ack that made it so
    with pytest.raises(RuntimeError), write_txn(store.conn):
        store.apply_changes(2, ())
        store.set_metas({"last_sync_ms": "5000"})
        raise RuntimeError("power cut")
    assert (store.delta_version, store.get_meta("last_sync_ms")) == (1, None)
    with write_txn(store.conn):
        store.apply_changes(2, ())
        store.set_metas({"last_sync_ms": "5000"})
    assert (store.delta_version, store.get_meta("last_sync_ms")) == (2, "5000")
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again


def test_the_watermark_is_the_oldest_unsent_sale_not_the_oldest_sale(store: Store) -> None:
    sales = [journal_sale(store, 100, at, kind="shop", announced=True) for at in (3000, 1000, 2000)]
    assert store.oldest_pending_ms() == 1000
    store.apply_results((SaleResult("T1", sales[1].seq, sales[1].uuid, "applied"),), "T1")
    assert store.oldest_pending_ms() == 2000
    assert store.journal_floor_and_unsent() == (3000, 2)


def test_meals_taken_counts_the_journal_or_the_servers_count_plus_what_is_unacknowledged(
    store: Store,
) -> None:
    sale = record(store)
    assert store.meals_taken("H1", "C01", "lunch", "1970-01-01", 0) == 1
    meals = {**CHANGES[0], "meals": {"day": "1970-01-01", "taken": {"C01": {"lunch": 2}}}}
    store.apply_changes(2, decode_changes((meals,)))
    assert store.meals_taken("H1", "C01", "lunch", "1970-01-01", 0) == 3  # 2 applied + 1 unacknowledged
    assert store.meals_taken("H1", "C01", "lunch", "1970-01-02", 0) == 1  # another day's count
    store.apply_results((SaleResult("T1", sale.seq, sale.uuid, "applied"),), "T1")
    assert store.meals_taken("H1", "C01", "lunch", "1970-01-01", 0) == 2


def test_a_terminal_database_from_before_the_migrations_is_upgraded(tmp_path: Path) -> None:
    from terminal.schema import INITIAL_SQL

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(INITIAL_SQL)
    conn.execute(
        "INSERT INTO journal(seq, uuid, amount_fen, subsidy_fen, self_fen, method, kind, visitor, offline, "
        "occurred_at_ms, sale_json) VALUES (1, 'u1', 10, 10, 0, 'card', 'shop', 0, 0, 5, '{}')"
    )
    conn.execute("INSERT INTO outbox(seq) VALUES (1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    s = Store(path)
    assert s.pending_count() == 1 and s.unannounced() == []  # old sales had been announced
    assert [m.name for m in __import__("terminal.schema").schema.MIGRATIONS.pending(s.db)] == []
    s.close()
    Store(path).close()  # a second open migrates nothing


@pytest.mark.parametrize("user_version", [2, 3, 4])
def test_a_terminal_database_with_face_or_ident_tables_from_the_old_migrations_is_upgraded(
    tmp_path: Path, user_version: int
) -> None:
    """Terminals that ran face pay (user_version 2) or identification (3: QR keys, seen QR
    codes, SUN counters; 4: digital RMB orders) keep their data and get the rest."""
    from terminal.schema import ECNY_ORDERS_SQL, FACES_SQL, IDENT_SQL, INITIAL_SQL, MIGRATIONS

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for sql in (INITIAL_SQL, FACES_SQL, IDENT_SQL, ECNY_ORDERS_SQL)[:user_version]:
        conn.executescript(sql)
    conn.execute("INSERT INTO faces(face_id, holder_id, encoding) VALUES ('F1', 'H1', x'00')")
    if user_version >= 3:
        conn.execute("INSERT INTO sun_counters(uid, last_counter, seen_at_ms) VALUES ('04AB', 61, 5)")
    if user_version >= 4:
        conn.execute(
            "INSERT INTO ecny_orders(order_no, amount_fen, kind, status, created_at_ms) "
            "VALUES ('O1', 1500, 'meal', 'paid', 5)"
        )
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()
    s = Store(path)
    assert MIGRATIONS.pending(s.db) == []
    assert [r[0] for r in s.conn.execute("SELECT holder_id FROM faces")] == ["H1"]
    counters = [r[0] for r in s.conn.execute("SELECT last_counter FROM sun_counters")]
    assert counters == ([61] if user_version >= 3 else [])
    orders = [r[0] for r in s.conn.execute("SELECT status FROM ecny_orders")]
    assert orders == (["paid"] if user_version >= 4 else [])
    s.conn.execute(
        "INSERT INTO qr_keys(holder_id, public_key, expires_at_ms, offline_allowance_fen) "
        "VALUES ('H1', 'k', 1, 0)"
    )
    record(s)  # the journal has the announced column now
    assert s.unannounced() != []
    s.close()


def test_a_fresh_terminal_database_has_every_table() -> None:
    s = Store(":memory:")
    tables = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "journal",
        "outbox",
        "declines",
        "faces",
        "qr_keys",
        "qr_seen",
        "sun_counters",
        "ecny_orders",
    } <= tables
    s.close()


def test_a_block_that_arrives_after_a_newer_balance_still_blocks(store: Store) -> None:
    sale = record(store)
    # the server blocked the holder at version 2; our sale was applied at version 3
    store.apply_results(
        (SaleResult("T1", sale.seq, sale.uuid, "applied", None, 1200, 0, 0, "H1", Balance(1800, 500, 3)),),
        "T1",
    )
    store.apply_changes(2, decode_changes(({**CHANGES[0], "blocked": True},)))
    state = store.card_state("C1")
    assert state.blocked and (state.subsidy_fen, state.version) == (1800, 3)
    store.apply_changes(3, decode_changes(({**CHANGES[0], "subsidy_fen": 1800, "blocked": True},)))
    store.apply_changes(4, decode_changes(({**CHANGES[0], "subsidy_fen": 1800, "blocked": False},)))
    assert not store.card_state("C1").blocked


def test_a_snapshot_replaces_cards_and_rules_but_keeps_newer_balances(store: Store) -> None:
    store.apply_changes(5, decode_changes(({**CHANGES[0], "subsidy_fen": 7},)))
    store.apply_changes(
        4,
        decode_changes(
            (
                {**CHANGES[0], "subsidy_fen": 99},
                {"kind": "card", "card_id": "C9", "holder_id": "H1", "status": "active"},
            )
        ),
        snapshot=True,
    )
    assert store.card_state("C1") is None and store.card_state("C9").subsidy_fen == 7


def test_a_change_that_is_not_a_decoded_record_is_refused_and_nothing_of_its_delta_applies(
    store: Store,
) -> None:
    blocked, card = decode_changes(({**CHANGES[0], "blocked": True}, {**CHANGES[1], "status": "lost"}))
    with pytest.raises(DomainError) as err:
        store.apply_changes(2, (blocked, {"kind": "voucher", "holder_id": "H1"}, card))  # type: ignore[arg-type]
    assert err.value.code == "unknown_change_kind"
    state = store.card_state("C1")
    assert state is not None and not state.blocked and state.card_status == "active"
    assert store.delta_version == 1


def test_a_delta_stores_its_version_and_the_sync_time_in_one_write_or_keeps_the_old_sync_time(
    store: Store,
) -> None:
    store.set_meta("last_sync_ms", "111")
    card = decode_changes(({"kind": "card", "card_id": "C9", "holder_id": "H1", "status": "active"},))
    store.apply_changes(2, card, synced_ms=222)
    assert (store.delta_version, store.get_meta("last_sync_ms")) == (2, "222")
    store.apply_changes(3, card)  # the sync time stored already (same ms): left as it is
    assert (store.delta_version, store.get_meta("last_sync_ms")) == (3, "222")
    with pytest.raises(DomainError), write_txn(store.conn):  # the agent's transaction fails
        store.apply_changes(4, (*card, object()), synced_ms=333)  # type: ignore[arg-type]
    assert (store.delta_version, store.get_meta("last_sync_ms")) == (3, "222")
