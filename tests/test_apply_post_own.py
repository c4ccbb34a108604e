"""``SaleApplier.post_own``: the postings a shared ingest transaction (PostgreSQL) writes
before it takes the tail lock. Followed by ``finish()`` it must record exactly what
``finish()`` alone records (the single writer's path): the same results, balances, entries
and sale rows — with the purses moved before the tail and the payables only under it."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.books import ledger
from server.infra.db import open_db, write_txn
from server.sales.apply import SaleApplier
from shared.clock import FakeClock
from tests.money_world import MoneyWorld


def _world_applies(conn: sqlite3.Connection, clock: FakeClock, split: bool) -> dict[str, Any]:
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")  # H001, H003: subsidy; H002 (U02): none
    w.topup("K001", 500)
    w.topup("K002", 300)
    sales = [
        w.new_sale("K001", 2_000),
        w.new_sale("K002", 1_500, canteen="C02"),  # past the self purse: an overdraft
        w.new_sale("K001", 30_000),  # the rest of the subsidy, the self purse, an overdraft
        w.new_sale("K003", 100, canteen="C02"),
    ]
    payable, purse = ledger.canteen_payable("C01"), ledger.self_purse("H001")
    between: dict[str, int] = {}
    with write_txn(conn):
        applier = SaleApplier(conn, clock.now_ms(), 1, ledger.AccountCache())
        applier.prefetch(sales)
        for s in sales:
            applier.apply(s, s.canteen_id)
        if split:
            applier.post_own()
            between = ledger.balances(conn, [payable, purse])
            with pytest.raises(RuntimeError):
                applier.apply(w.new_sale("K003", 100), "C01")  # nothing is decided after it
        results = applier.finish()
    assert ledger.check(conn) == []
    return {
        # terminal ids and uuids are drawn at random per world
        "results": [replace(r, terminal_id="", uuid="") for r in results],
        "between": between,
        "balances": dict(conn.execute("SELECT id, balance_fen FROM accounts").fetchall()),
        "entries": [tuple(r) for r in conn.execute("SELECT * FROM entries ORDER BY id")],
        "sales": [
            tuple(r)
            for r in conn.execute(
                "SELECT canteen_id, seq, status, holder_id, amount_fen, subsidy_fen, self_fen, "
                "overdraft_fen, txn_id, balance_subsidy_fen, balance_self_fen, balance_version "
                "FROM sales ORDER BY canteen_id, seq"
            )
        ],
    }


def test_posting_before_the_tail_records_what_finish_alone_records(
    conn: sqlite3.Connection, clock: FakeClock, tmp_path: Path
) -> None:
    other = open_db(tmp_path / "other.sqlite")
    try:
        alone = _world_applies(other, clock, split=False)
    finally:
        other.close()
    split = _world_applies(conn, clock, split=True)
    # before the tail: H001's self purse paid its 500, C01's payable (created) still at 0
    assert split["between"] == {ledger.self_purse("H001"): -1_500, ledger.canteen_payable("C01"): 0}
    assert split["balances"][ledger.canteen_payable("C01")] == 32_000
    for part in ("results", "balances", "entries", "sales"):
        assert split[part] == alone[part], part
