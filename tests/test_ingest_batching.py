"""The ingest worker's transactions: how it groups queued messages, and that a failed
transaction leaves nothing behind — not even in its cache of accounts known to exist."""

from __future__ import annotations

import sqlite3

import pytest

from server.books import ledger
from server.closing.check import all_violations
from server.infra.db import dialect, open_db
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from shared.protocol import topics
from tests.helpers import signed_batch
from tests.money_world import MoneyWorld


def test_queued_messages_are_grouped_by_count_and_by_bytes(
    conn: sqlite3.Connection, clock: FakeClock
) -> None:
    w = MoneyWorld(conn, clock)
    w.worker.max_messages, w.worker.max_bytes = 3, 1_000
    small = [("t", b"x" * 100)] * 7
    assert [len(g) for g in w.worker.groups(small)] == [3, 3, 1]
    big = [("t", b"x" * 600)] * 3
    assert [len(g) for g in w.worker.groups(big)] == [2, 1]  # the second message crosses 1,000 bytes
    assert sum(w.worker.groups(small + big), []) == small + big


def test_the_worker_loop_takes_its_queue_through_the_same_groups(app, clock: FakeClock) -> None:  # noqa: ANN001
    worker = IngestWorker(
        open_db(app.config["DATABASE"]), clock, lambda t, p, r: True, max_messages=3, max_bytes=1_000
    )
    for _ in range(7):
        worker.submit("t", b"x" * 100)  # refused (no envelope), but each group is one transaction
    worker.start()
    try:
        assert worker.idle.wait(30) and worker.alive
    finally:
        worker.stop()
    assert not worker.alive
    assert (worker.stats.batches, worker.stats.messages, worker.stats.rejected_messages) == (3, 7, 7)


def test_a_rolled_back_transaction_leaves_no_account_the_worker_believes_in(
    conn: sqlite3.Connection, clock: FakeClock
) -> None:
    w = MoneyWorld(conn, clock)
    w.topup("K001", 500)  # H001's self purse exists; C02's payable does not yet
    _fail_inserting_sales_of(conn, "K003")
    first, second = w.new_sale("K001", 300, canteen="C02"), w.new_sale("K003", 100, canteen="C02")
    with pytest.raises(sqlite3.IntegrityError):
        w.send(first, second)
    assert (
        conn.execute(
            "SELECT count(*) FROM accounts WHERE id = ?", (ledger.canteen_payable("C02"),)
        ).fetchone()[0]
        == 0
    )
    conn.execute("DROP TRIGGER boom" + (" ON sales" if dialect(conn) == "postgresql" else ""))
    results = w.send(first, second)  # the terminal resends the same sales
    assert [r.status for r in results] == ["applied", "applied"]
    assert ledger.balance(conn, ledger.canteen_payable("C02")) == 400
    assert all_violations(conn) == []


def test_sales_of_one_holder_in_one_transaction_are_split_as_if_sent_one_by_one(
    conn: sqlite3.Connection, clock: FakeClock
) -> None:
    """The worker reads a transaction's holders once and posts its sales together: a later
    sale of the same holder, in the same message or another, must still be split over the
    purses as the earlier ones left them (here into an overdraft), exactly as when each sale
    is its own transaction. K001 gets them together, K003 (same unit, same money) one by one."""
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")  # 30,000 subsidy each
    w.topup("K001", 500)
    w.topup("K003", 500)
    amounts = [20_000, 20_000, 1_000]
    creds = w.terminals["C01"]
    together = [w.new_sale("K001", fen) for fen in amounts]
    w.worker.process(
        [
            (topics.sales(creds.terminal_id), signed_batch(creds, together[:2], clock.now_ms(), "m1")),
            (topics.sales(creds.terminal_id), signed_batch(creds, together[2:], clock.now_ms(), "m2")),
        ]
    )
    batched = [r for ack in w.acks[-2:] for r in ack.results]
    alone = [w.sell("K003", fen) for fen in amounts]
    split = [(r.status, r.subsidy_fen, r.self_fen, r.overdraft_fen) for r in batched]
    assert split == [(r.status, r.subsidy_fen, r.self_fen, r.overdraft_fen) for r in alone]
    assert split == [
        ("applied", 20_000, 0, 0),
        ("applied", 10_000, 10_000, 9_500),
        ("applied", 0, 1_000, 1_000),
    ]
    # every result of the transaction carries the balance at its end
    assert {(r.balance.subsidy_fen, r.balance.self_fen) for r in batched} == {(0, -10_500)}
    assert (alone[-1].balance.subsidy_fen, alone[-1].balance.self_fen) == (0, -10_500)
    assert ledger.balance(conn, ledger.self_purse("H001")) == ledger.balance(conn, ledger.self_purse("H003"))
    # the whole transaction again: every sale a duplicate with its first result
    w.worker.process(
        [
            (topics.sales(creds.terminal_id), signed_batch(creds, together[:2], clock.now_ms(), "m3")),
            (topics.sales(creds.terminal_id), signed_batch(creds, together[2:], clock.now_ms(), "m4")),
        ]
    )
    again = [r for ack in w.acks[-2:] for r in ack.results]
    assert [r.status for r in again] == ["duplicate"] * 3
    assert [(r.subsidy_fen, r.self_fen, r.overdraft_fen) for r in again] == [s[1:] for s in split]
    assert ledger.balance(conn, ledger.self_purse("H001")) == -10_500
    assert all_violations(conn) == []


def _fail_inserting_sales_of(conn: sqlite3.Connection, card_id: str) -> None:
    """A trigger named boom that fails the insert of a sale of ``card_id`` (a constraint
    error), in the database's own trigger language."""
    if dialect(conn) == "postgresql":
        conn.execute(
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk on fire' USING ERRCODE = 'check_violation'; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER boom BEFORE INSERT ON sales FOR EACH ROW WHEN (NEW.card_id = '{card_id}') "
            "EXECUTE FUNCTION boom()"
        )
        return
    conn.execute(
        f"CREATE TEMP TRIGGER boom BEFORE INSERT ON sales WHEN NEW.card_id = '{card_id}' "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
