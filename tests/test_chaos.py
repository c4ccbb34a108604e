"""Fault injection: the plan is the seed's, the audit catches what it must, and a few small
runs of real processes under every kind of fault lose nothing and count nothing twice."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.books import ledger
from server.books.periods import year_of_ms
from server.infra.db import write_txn
from server.registry.units import set_terminal_settings
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock
from simulator.chaos.audit import AuditResult, JournalRow, ReversalRow, audit
from simulator.chaos.inject import COMPROMISED_SEQ_BASE, implausible_sale
from simulator.chaos.plan import COMPROMISED_VARIANTS, FAULT_KINDS, ChaosOptions, build_plan
from simulator.chaos.run import render, run_chaos
from tests.helpers import populated, reopen, sale, signed_batch, terminal

CARDS = [f"K{i:05d}" for i in range(1, 41)]


# --- the plan ---------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    opts = ChaosOptions(seed=42, terminals=4, diners=30, minutes=1.0)
    assert build_plan(opts, CARDS) == build_plan(opts, CARDS)
    other = build_plan(ChaosOptions(seed=43, terminals=4, diners=30, minutes=1.0), CARDS)
    assert other.taps != build_plan(opts, CARDS).taps and other.faults != build_plan(opts, CARDS).faults


@pytest.mark.parametrize("minutes", [0.1, 0.5, 3.0])
def test_every_kind_of_fault_is_in_every_plan(minutes: float) -> None:
    for seed in range(1, 30):
        plan = build_plan(ChaosOptions(seed=seed, terminals=3, diners=10, minutes=minutes), CARDS)
        counts = plan.fault_counts()
        partitions = sum(counts[k] for k in counts if k.startswith("partition_"))
        assert partitions >= 1
        assert all(counts[k] >= 1 for k in FAULT_KINDS if not k.startswith("partition_")), (seed, counts)
        assert all(0 <= f.at_s < plan.workload_s for f in plan.faults)
        assert all(0 <= t.at_s < plan.workload_s + 1 and 0 <= t.terminal < 3 for t in plan.taps)


def test_faults_on_one_target_never_overlap() -> None:
    for seed in range(1, 30):
        plan = build_plan(ChaosOptions(seed=seed, terminals=3, diners=10, minutes=2.0), CARDS)
        groups: dict[Any, list[tuple[float, float]]] = {}
        for f in plan.faults:
            if f.duration_s:
                key = (
                    ("net", f.target)
                    if f.kind.startswith("partition_")
                    else (f.kind, f.kind == "terminal_kill" or f.target)
                )
                groups.setdefault(key, []).append((f.at_s, f.at_s + f.duration_s))
        for windows in groups.values():
            windows.sort()
            assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False)), (seed, windows)


def test_a_cluster_plan_strikes_nodes_server_processes_and_postgresql_one_at_a_time() -> None:
    for seed in range(1, 30):
        opts = ChaosOptions(seed=seed, terminals=3, diners=10, minutes=2.0, cluster=True)
        plan = build_plan(opts, CARDS)
        counts = plan.fault_counts()
        assert "broker_restart" not in counts  # the broker is three nodes: one at a time dies
        assert all(counts[k] >= 1 for k in ("node_kill", "server_kill", "pg_restart", "terminal_kill"))
        for kind in ("node_kill", "server_kill", "pg_restart"):
            windows = sorted((f.at_s, f.at_s + f.duration_s) for f in plan.faults if f.kind == kind)
            assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False)), (seed, kind)
        assert {f.params["node"] for f in plan.faults if f.kind == "node_kill"} <= {0, 1, 2}
        assert {f.params["server"] for f in plan.faults if f.kind == "server_kill"} <= {0, 1}
        # the same seed's taps as without the cluster: the runs compare
        assert plan.taps == build_plan(replace(opts, cluster=False), CARDS).taps


def test_a_clock_skew_is_planned_for_one_terminal() -> None:
    plan = build_plan(ChaosOptions(seed=5, terminals=3, diners=10), CARDS)
    assert len(plan.clock_skew) == 1
    ((index, skew),) = plan.clock_skew.items()
    assert 0 <= index < 3 and skew != 0


def test_options_refuse_a_run_that_cannot_be_chaos() -> None:
    with pytest.raises(ValueError):
        ChaosOptions(terminals=1)
    with pytest.raises(ValueError):
        ChaosOptions(minutes=0)


# --- the audit --------------------------------------------------------------------------


class Books:
    """A server database with real applied sales, and the journal a terminal would hold."""

    def __init__(self, conn: sqlite3.Connection, clock: FakeClock) -> None:
        self.conn = conn
        self.clock = clock
        world = populated(conn, clock.now_ms(), diners=3)
        self.card = world.diners[0].card_id
        self.holder = world.diners[0].holder_id
        with write_txn(conn):  # the overdraft tests sell a whole balance in one sale
            set_terminal_settings(conn, {"risk": {"max_sale_fen": 1_000_000}}, clock.now_ms())
        self.creds = terminal(conn, "C01", clock.now_ms())
        self.worker = IngestWorker(reopen(conn), clock, lambda *a: True)
        self.start = {
            d.holder_id: ledger.balance(conn, ledger.subsidy_purse(d.holder_id, 2026))
            + ledger.balance(conn, ledger.self_purse(d.holder_id))
            for d in world.diners
        }
        self.journal: list[JournalRow] = []
        self.events: list[dict[str, Any]] = []
        self.seq = 0

    def sell(self, amount_fen: int, *, send: bool = True) -> JournalRow:
        self.seq += 1
        s = sale(
            self.creds, self.seq, self.card, amount_fen, self.clock.now_ms(), kind="shop", meal_period=None
        )
        if send:
            self.worker.process(
                [(f"canteen/v1/t/{self.creds.terminal_id}/up/sales", signed_batch(self.creds, [s], 1))]
            )
        row = JournalRow(
            self.creds.terminal_id, s.seq, s.uuid, self.holder, amount_fen, s.occurred_at_ms, False
        )
        self.journal.append(row)
        self.events.append({"event": "approved", "uuid": s.uuid, "_seen_ms": s.occurred_at_ms})
        return row

    def audit(self, allowance: int = 0, compromised: list[tuple[str, int, str]] | None = None) -> AuditResult:
        tid = self.creds.terminal_id
        return audit(
            self.conn,
            {tid: self.journal},
            {tid: self.events},
            pending={tid: 0},
            start_balance_fen=self.start,
            offline_allowance_fen=allowance,
            max_clock_offset_ms=300_000,
            compromised=compromised or [],
            reversals=self.journaled_reversals(),
        )

    def journaled_reversals(self) -> dict[str, list[ReversalRow]] | None:
        """The reversals for the audit to check (None: these books have none)."""
        return None

    def steal(self, variants: tuple[str, ...] = COMPROMISED_VARIANTS) -> list[tuple[str, int, str]]:
        """A thief with this terminal's key: one batch of implausible sales through the worker."""
        own = self.conn.execute(
            "SELECT unit_id FROM canteens WHERE id = ?", (self.creds.canteen_id,)
        ).fetchone()
        other = self.conn.execute(
            "SELECT c.card_id FROM cards c JOIN holders h ON h.id = c.holder_id WHERE h.unit_id <> ? LIMIT 1",
            (own[0],),
        ).fetchone()[0]
        sales = [
            implausible_sale(
                v,
                terminal_id=self.creds.terminal_id,
                seq=COMPROMISED_SEQ_BASE + i,
                canteen_id=self.creds.canteen_id,
                card_id=self.card,
                other_unit_card=other,
                now_ms=self.clock.now_ms(),
                max_sale_fen=1_000_000,
                meal_fen=999,
                item_fen=1,
                days_ahead=3,
            )
            for i, v in enumerate(variants)
        ]
        self.worker.process(
            [(f"canteen/v1/t/{self.creds.terminal_id}/up/sales", signed_batch(self.creds, sales, 1))]
        )
        return [(s.terminal_id, s.seq, s.uuid) for s in sales]


@pytest.fixture
def books(conn: sqlite3.Connection, clock: FakeClock) -> Books:
    return Books(conn, clock)


def codes(result: AuditResult) -> set[str]:
    return {v["code"] for v in result.violations}


def test_an_audit_of_honest_books_passes(books: Books) -> None:
    books.sell(1200)
    books.sell(300)
    r = books.audit()
    assert (r.approved, r.applied, r.lost, r.double_applied, r.ledger_sum_fen) == (2, 2, 0, 0, 0)
    assert r.ok and r.violations == []


def test_a_sale_the_server_never_applied_is_lost(books: Books) -> None:
    books.sell(1200)
    books.sell(500, send=False)
    r = books.audit()
    assert r.lost == 1 and "lost" in codes(r) and not r.ok


def test_a_sale_applied_twice_is_caught_even_without_the_servers_own_guard(books: Books) -> None:
    row = books.sell(1200)
    books.conn.execute("DROP INDEX txns_kind_ref")  # the audit must not rest on the server's constraints
    with write_txn(books.conn):  # a second ledger txn for the same sale: what must never happen
        ledger.post(
            books.conn,
            "sale",
            [ledger.Move(ledger.subsidy_purse(books.holder, 2026), ledger.canteen_payable("C01"), 1200)],
            books.clock.now_ms(),
            ref=f"{row.terminal_id}/{row.seq}",
        )
    r = books.audit()
    assert r.double_applied == 1 and not r.ok


def test_a_sale_no_terminal_journaled_is_caught(books: Books) -> None:
    books.sell(1200)
    books.journal.clear()
    books.events.clear()
    r = books.audit()
    assert "applied_not_approved" in codes(r) and not r.ok


def test_a_diner_told_paid_for_a_sale_not_journaled_is_caught(books: Books) -> None:
    books.sell(300)
    books.events.append({"event": "approved", "uuid": uuid.uuid4().hex})
    assert "announced_not_journaled" in codes(books.audit())


def test_a_sale_dated_far_from_when_it_happened_is_caught(books: Books) -> None:
    books.sell(300)
    books.events[-1]["_seen_ms"] += 20 * 60_000  # the diner was served 20 minutes after its date
    assert "misdated" in codes(books.audit())


def test_one_terminal_overdrawing_beyond_the_allowance_breaks_the_bound(books: Books) -> None:
    balance = books.start[books.holder]
    books.sell(balance + 250)
    assert books.audit(allowance=300).ok  # within the offline allowance
    books.sell(100)
    r = books.audit(allowance=300)
    assert r.overdraft_fen == 350 > r.overdraft_bound_fen == 300
    assert {"overdraft_beyond_bound", "terminal_oversold"} <= codes(r) and not r.ok


def test_a_stolen_keys_implausible_sales_are_all_quarantined_and_none_applied(books: Books) -> None:
    books.sell(300)
    stolen = books.steal()
    r = books.audit(compromised=stolen)
    assert (r.compromised_sent, r.quarantined, r.quarantined_applied, r.honest_quarantined) == (5, 5, 0, 0)
    assert r.applied == 1 and r.ok, r.violations  # the purses moved by the honest sale only
    reasons = dict(
        books.conn.execute("SELECT seq - ?, reason FROM quarantined_sales", (COMPROMISED_SEQ_BASE,))
    )
    assert reasons == {
        0: "sale_over_limit",
        1: "sale_price_mismatch",
        2: "sale_price_mismatch",
        3: "sale_time_future",
        4: "sale_over_limit",
    }


def test_a_held_sale_no_thief_sent_is_an_honest_sale_quarantined(books: Books) -> None:
    stolen = books.steal(("future", "too_large"))
    r = books.audit(compromised=stolen[:1])  # the second one, as if an honest terminal had sent it
    assert (r.compromised_sent, r.quarantined, r.honest_quarantined) == (1, 1, 1)
    assert "honest_quarantined" in codes(r) and not r.ok


def test_a_compromised_sale_that_moved_money_is_caught(books: Books) -> None:
    row = books.sell(300)  # stands for a thief's sale the server applied
    r = books.audit(compromised=[(row.terminal_id, row.seq, row.uuid)])
    assert (r.compromised_sent, r.quarantined, r.quarantined_applied) == (1, 0, 1)
    assert "compromised_applied" in codes(r) and not r.ok


def test_money_moved_by_no_sale_is_caught(books: Books) -> None:
    books.sell(300)
    year = year_of_ms(books.clock.now_ms())
    with write_txn(books.conn):  # a purse debited outside any sale
        ledger.post(
            books.conn,
            "sale",
            [ledger.Move(ledger.subsidy_purse(books.holder, year), ledger.canteen_payable("C01"), 100)],
            books.clock.now_ms(),
            ref="nobody/1",
        )
    assert "purse_mismatch" in codes(books.audit())


def test_an_outbox_left_full_is_caught(books: Books) -> None:
    books.sell(300)
    tid = books.creds.terminal_id
    r = audit(
        books.conn,
        {tid: books.journal},
        {tid: books.events},
        pending={tid: 1},
        start_balance_fen=books.start,
        offline_allowance_fen=0,
        max_clock_offset_ms=300_000,
    )
    assert "not_drained" in codes(r)


# --- real runs --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.sqlite_only("server processes on a SQLite file (PostgreSQL: test_chaos_cluster.py)")
@pytest.mark.parametrize("seed", [101, 202, 303])
def test_a_small_chaos_run_loses_nothing_and_counts_nothing_twice(seed: int, tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_chaos(ChaosOptions(seed=seed, terminals=3, diners=16, minutes=0.3), say=lines.append)
    assert lines[0].startswith(f"chaos seed {seed}")  # the seed and the plan are printed
    assert result["violations"] == [], result["violations"]
    assert (result["lost"], result["double_applied"], result["ledger_sum_fen"]) == (0, 0, 0)
    assert result["overdraft_fen"] <= result["overdraft_bound_fen"]
    assert result["approved"] == result["applied"] > 0
    assert result["drained"] and result["ok"]
    executed = result["faults"]
    for kind in ("broker_restart", "server_kill", "terminal_kill", "clock_skew"):
        assert executed[kind] >= 1, (kind, executed)
    assert sum(v for k, v in executed.items() if k.startswith("partition_")) >= 1
    # a message fault finds nothing to send when the broker is down or nothing was captured yet
    for kind in ("duplicate", "reorder", "forged", "corrupted", "compromised"):
        assert executed[kind] + result["not_injected"].get(kind, 0) >= 1, kind
    # a stolen terminal key: every implausible sale held for an admin, none applied, no honest one held
    assert result["compromised_sent"] >= 2 and result["quarantined"] == result["compromised_sent"]
    assert (result["quarantined_applied"], result["honest_quarantined"]) == (0, 0)
    # the operator's reversals (冲正) met the same faults: each journaled one applied, once
    assert (result["reversals_lost"], result["reversals_doubled"]) == (0, 0)
    assert result["reversals_approved"] == result["reversals_applied"]
    assert "✔ 通过 PASS" in render(result)


def test_chaos_cli_refuses_a_single_terminal() -> None:
    from click.testing import CliRunner

    from simulator.cli import main

    result = CliRunner().invoke(main, ["chaos", "--terminals", "1"])
    assert result.exit_code == 2 and "terminals" in result.output
