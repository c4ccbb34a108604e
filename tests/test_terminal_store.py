"""The terminal's journal and outbox: durable together, settled only by the server's ack."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shared.protocol import SaleResult
from shared.protocol.messages import Balance
from terminal.store import Store

CHANGES = (
    {"kind": "holder", "holder_id": "H1", "unit_id": "U01", "subsidy_fen": 3000, "self_fen": 500, "blocked": False},
    {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"},
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "t.sqlite")
    s.apply_changes(1, CHANGES)
    return s


def record(store: Store, amount: int = 1200) -> object:
    return store.record_sale(
        terminal_id="T1", canteen_id="C01", card_id="C1", holder_id="H1", amount_fen=amount,
        subsidy_fen=amount, self_fen=0, occurred_at_ms=1000, meal_period="lunch",
    )


def test_journal_uses_synchronous_full(store: Store) -> None:
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_sale_and_its_outbox_row_are_written_together(store: Store) -> None:
    sale = record(store)
    assert store.pending_count() == 1
    assert store.card_state("C1").unconfirmed_fen == 1200
    assert sale.seq == 1 and record(store).seq == 2


def test_a_failed_write_leaves_neither_row(store: Store) -> None:
    store.conn.execute("CREATE TRIGGER boom BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk full'); END")
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
    store.apply_changes(2, ({**CHANGES[0], "subsidy_fen": 100},))
    sale = record(store, 50)
    store.apply_results((SaleResult("T1", sale.seq, sale.uuid, "duplicate", None, 50, 0, 0, "H1", Balance(9999, 0, 1)),), "T1")
    assert store.card_state("C1").subsidy_fen == 100


def test_a_rejected_sale_leaves_the_outbox_and_is_marked(store: Store) -> None:
    sale = record(store)
    store.apply_results((SaleResult("T1", sale.seq, sale.uuid, "rejected", "card_unknown"),), "T1")
    row = store.conn.execute("SELECT status, reason FROM journal").fetchone()
    assert tuple(row) == ("rejected", "card_unknown")
    assert store.pending_count() == 0
