"""Sales no honest terminal could have made are quarantined, never applied (issue 11).

A terminal's key proves who sent a sale, not that it is right. The server checks every
sale against what it told the terminal (limits, prices in force, time); a sale that fails
moves no purse, is answered ``quarantined`` (final for the terminal), and waits for an
admin who accepts it (applied now, once) or rejects it (never applied).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.books import ledger
from server.cli.root import main
from server.closing.check import all_violations, quarantine_summary
from server.infra.auth import create_token
from server.infra.db import open_db, write_txn
from server.registry import canteens, units
from server.registry.units import set_terminal_settings
from server.sales import quarantine
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, SystemClock, ms_from_china
from shared.errors import DomainError
from shared.protocol import Item, topics
from simulator.harness.cluster import Cluster
from simulator.harness.world import demo_world
from simulator.waiting import wait_until
from tests.helpers import sale, signed_batch, terminal
from tests.ingest_support import NOON, IngestCity
from tests.money_world import OPERATOR, MoneyWorld

YEAR_2099_MS = ms_from_china("2099-01-01T12:00")


class City(IngestCity):
    def staff(self) -> str:  # a U01 diner: staff of C01's unit
        return self.card("U01")

    def visitor(self) -> str:
        return self.card("U02")

    def balances(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT id, balance_fen FROM accounts")}

    def blocked(self, card: str) -> bool:
        row = self.conn.execute(
            "SELECT h.blocked, coalesce((SELECT balance_fen FROM accounts WHERE id = ?), 0) "
            "FROM cards c JOIN holders h ON h.id = c.holder_id WHERE c.card_id = ?",
            (ledger.self_purse(self.holder(card)), card),
        ).fetchone()
        return bool(row[0]) or row[1] < 0


@pytest.fixture
def city(tmp_path: Path) -> City:
    return City(tmp_path / "server.db")


def _held(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return [tuple(r) for r in conn.execute("SELECT reason, state FROM quarantined_sales ORDER BY seq")]


def test_finding_ten_million_fen_on_another_units_card_is_quarantined(city: City) -> None:
    before = city.balances()
    card = city.visitor()
    [r] = city.send(city.new_sale(card, 10_000_000, offline=True, subsidy_fen=10_000_000))
    assert (r.status, r.reason, r.quarantined, r.rejected) == ("quarantined", "sale_over_limit", True, False)
    assert r.balance is None and r.subsidy_fen == r.self_fen == r.overdraft_fen == 0
    assert city.balances() == before  # no purse, no payable moved
    assert not city.blocked(card)
    assert _held(city.conn) == [("sale_over_limit", "pending")]
    assert all_violations(city.conn) == []
    assert quarantine_summary(city.conn)["counts"]["pending"] == 1


def test_a_copy_of_a_quarantined_sale_is_a_duplicate_the_terminal_reads_as_quarantined(city: City) -> None:
    s = city.new_sale(city.staff(), 1500, meal_period="lunch", kind="meal")  # staff at the visitor price
    [first] = city.send(s)
    [copy] = city.send(s)
    assert (first.status, first.reason) == ("quarantined", "sale_price_mismatch")
    assert (copy.status, copy.reason, copy.quarantined, copy.rejected) == (
        "duplicate",
        "sale_price_mismatch",
        True,
        False,
    )
    assert city.conn.execute("SELECT count(*) FROM quarantined_sales").fetchone()[0] == 1


def test_a_sale_dated_2099_is_quarantined(city: City) -> None:
    before = city.balances()
    [r] = city.send(city.new_sale(city.staff(), 500, at_ms=YEAR_2099_MS))
    assert (r.status, r.reason) == ("quarantined", "sale_time_future")
    assert city.balances() == before


def test_a_sale_dated_before_the_terminal_existed_is_quarantined(city: City) -> None:
    [r] = city.send(city.new_sale(city.staff(), 500, at_ms=city.clock.now_ms() - 86_400_000))
    assert (r.status, r.reason) == ("quarantined", "sale_time_before_terminal")


def test_meals_cost_the_periods_price_for_staff_and_visitors(city: City) -> None:
    staff, visitor = city.staff(), city.visitor()
    meal = {"kind": "meal", "meal_period": "lunch"}
    results = city.send(
        city.new_sale(staff, 1200, **meal),  # staff price
        city.new_sale(visitor, 1500, **meal),  # visitor price
        city.new_sale(visitor, 1300, **meal),  # neither
        city.new_sale(staff, 1500, **meal),  # a visitor's price charged to staff
        city.new_sale(staff, 500, kind="meal", meal_period="dinner"),  # dinner costs ¥10.00
        city.new_sale(None, 1500, method="ecny", subsidy_fen=0, **meal),  # an unidentified payer
    )
    assert [(r.status, r.reason) for r in results] == [
        ("applied", None),
        ("applied", None),
        ("quarantined", "sale_price_mismatch"),
        ("quarantined", "sale_price_mismatch"),
        ("quarantined", "sale_price_mismatch"),
        ("applied", None),
    ]


def test_a_basket_must_carry_the_price_list_prices(city: City) -> None:
    card = city.staff()
    right = (Item("tissue", 2, 350), Item("water", 1, 200))
    results = city.send(
        city.new_sale(card, 900, items=right),
        city.new_sale(card, 300, items=(Item("tissue", 1, 300),)),  # cheaper than listed
        city.new_sale(card, 900, items=(Item("caviar", 1, 900),)),
        city.new_sale(card, 9_000),  # a typed amount within the ¥100.00 limit
        city.new_sale(card, 10_001),  # above it
    )
    assert [(r.status, r.reason) for r in results] == [
        ("applied", None),
        ("quarantined", "sale_price_mismatch"),
        ("quarantined", "sale_unknown_item"),
        ("applied", None),
        ("quarantined", "sale_over_limit"),
    ]


def test_offline_sales_beyond_the_offline_limit_are_quarantined(city: City) -> None:
    with write_txn(city.conn):
        set_terminal_settings(city.conn, {"risk": {"max_offline_total_fen": 3_000}}, city.clock.now_ms())
    city.clock.advance_ms(1_000)
    card = city.staff()
    online, offline = city.send(city.new_sale(card, 5_000), city.new_sale(card, 5_000, offline=True))
    assert (online.status, offline.status, offline.reason) == (
        "applied",
        "quarantined",
        "sale_over_offline_limit",
    )


def test_a_sale_priced_before_a_price_change_is_applied(city: City) -> None:
    before_change = city.clock.now_ms()
    city.clock.advance_ms(60_000)
    with write_txn(city.conn):
        canteens.update(
            city.conn,
            "C01",
            city.clock.now_ms(),
            config={"meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1300}}},
        )
    card = city.staff()
    meal = {"kind": "meal", "meal_period": "lunch"}
    results = city.send(
        city.new_sale(card, 1200, at_ms=before_change, **meal),  # old price, made before the change
        city.new_sale(card, 1300, **meal),  # the new price
        city.new_sale(card, 1400, **meal),  # never the price
    )
    assert [r.status for r in results] == ["applied", "applied", "quarantined"]


def test_accept_applies_the_sale_now_once_and_copies_stay_duplicates(city: City) -> None:
    card = city.visitor()
    s = city.new_sale(card, 20_000)  # above the ¥100.00 limit: a banquet the canteen vouches for
    [held] = city.send(s)
    assert held.status == "quarantined"
    before = city.balances()
    city.clock.advance_ms(3_600_000)
    with write_txn(city.conn):
        done = quarantine.accept(city.conn, s.terminal_id, s.seq, city.clock.now_ms(), "admin", "宴请已核实")
    assert done["state"] == "accepted" and done["result"]["status"] == "applied"
    after = city.balances()
    assert after[ledger.canteen_payable("C01")] - before.get(ledger.canteen_payable("C01"), 0) == 20_000
    row = city.conn.execute(
        "SELECT status, reason, occurred_at_ms FROM sales WHERE terminal_id = ? AND seq = ?",
        (s.terminal_id, s.seq),
    ).fetchone()
    assert tuple(row) == ("applied", None, city.clock.now_ms())  # dated now
    with pytest.raises(DomainError) as exc, write_txn(city.conn):
        quarantine.accept(city.conn, s.terminal_id, s.seq, city.clock.now_ms(), "admin")
    assert exc.value.code == "quarantine_decided"
    [copy] = city.send(s)
    assert (copy.status, copy.reason, copy.rejected, copy.quarantined) == ("duplicate", None, False, False)
    assert city.balances() == after  # applied once
    assert all_violations(city.conn) == []


def test_reject_never_applies_and_the_canteen_sees_why(city: City) -> None:
    s = city.new_sale(city.staff(), 1500, kind="meal", meal_period="lunch")
    city.send(s)
    before = city.balances()
    with pytest.raises(DomainError) as exc, write_txn(city.conn):
        quarantine.reject(city.conn, s.terminal_id, s.seq, city.clock.now_ms(), "admin", "  ")
    assert exc.value.code == "invalid_input"
    with write_txn(city.conn):
        quarantine.reject(city.conn, s.terminal_id, s.seq, city.clock.now_ms(), "admin", "本单位职工按职工价")
    with pytest.raises(DomainError) as exc, write_txn(city.conn):
        quarantine.accept(city.conn, s.terminal_id, s.seq, city.clock.now_ms(), "admin")
    assert exc.value.code == "quarantine_decided"
    [copy] = city.send(s)
    assert (copy.status, copy.reason, copy.rejected) == ("duplicate", "quarantine_rejected", True)
    assert city.balances() == before
    listed = quarantine.listing(city.conn, city.clock.now_ms(), canteens=["C01"])
    assert [(x["state"], x["decision_note"]) for x in listed["sales"]] == [("rejected", "本单位职工按职工价")]
    assert quarantine.listing(city.conn, city.clock.now_ms(), canteens=["C02"])["sales"] == []
    assert all_violations(city.conn) == []


def test_settlement_counts_only_applied_sales(city: City) -> None:
    card = city.staff()
    city.send(
        city.new_sale(card, 800), city.new_sale(card, 50_000), city.new_sale(card, 800, at_ms=YEAR_2099_MS)
    )
    payable = city.balances()[ledger.canteen_payable("C01")]
    applied = city.conn.execute(
        "SELECT sum(amount_fen) FROM sales WHERE canteen_id = 'C01' AND status = 'applied'"
    ).fetchone()[0]
    assert payable == applied == 800


def test_a_terminal_quarantined_three_times_a_day_is_suspect(
    city: City, caplog: pytest.LogCaptureFixture
) -> None:
    card = city.staff()
    with caplog.at_level(logging.WARNING, logger="server.sales.quarantine"):
        city.send(city.new_sale(card, 20_000), city.new_sale(card, 30_000))
        assert not [r for r in caplog.records if r.getMessage().startswith("terminal_suspect")]
        city.send(city.new_sale(card, 40_000))
    suspect = [r for r in caplog.records if r.name == "server.sales.quarantine"]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in suspect] == [("WARNING", "terminal_suspect")]
    listed = quarantine.listing(city.conn, city.clock.now_ms())
    assert listed["suspect_terminals"] == [
        {"terminal_id": city.creds.terminal_id, "canteen_id": "C01", "quarantined_today": 3}
    ]
    assert listed["counts"] == {"pending": 3, "accepted": 0, "rejected": 0}


_IMPLAUSIBLE = st.one_of(
    st.builds(lambda a: {"amount_fen": a}, st.integers(10_001, 10_000_000)),
    st.builds(lambda a, d: {"amount_fen": a, "days": d}, st.integers(1, 10_000), st.integers(1, 30_000)),
    st.builds(
        lambda a: {"amount_fen": a, "kind": "meal", "meal_period": "lunch"},
        st.integers(1, 10_000).filter(lambda a: a not in (1200, 1500)),
    ),
    st.builds(
        lambda p, q: {"items": (Item("tissue", q, p),), "amount_fen": p * q},
        st.integers(1, 5_000).filter(lambda p: p != 350),
        st.integers(1, 3),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(_IMPLAUSIBLE, min_size=1, max_size=6), offline=st.booleans())
def test_implausible_sales_never_move_a_balance(city: City, cases: list[dict], offline: bool) -> None:
    before = city.balances()
    sales = []
    for case in cases:
        kw = dict(case)
        amount = kw.pop("amount_fen")
        days = kw.pop("days", 0)
        at = city.clock.now_ms() + days * 86_400_000
        sales.append(
            city.new_sale(city.visitor(), amount, at_ms=at, offline=offline, subsidy_fen=amount, **kw)
        )
    results = city.send(*sales)
    assert all(r.status == "quarantined" for r in results), [(r.status, r.reason) for r in results]
    assert city.balances() == before
    assert all_violations(city.conn) == []


@pytest.mark.broker
def test_finding_through_the_broker_the_terminal_takes_the_quarantine_as_final(broker, tmp_path) -> None:  # noqa: ANN001
    """The finding end to end: a terminal whose key signs 10,000,000 fen on another unit's
    card. The real ingest worker holds the sale; the terminal gets its ack, drops the sale
    from its outbox, journals it as not applied with the reason, and never resends it."""
    clock = FakeClock(ms_from_china(NOON))
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        conn = cluster.db()
        world = demo_world(conn, clock.now_ms(), diners=6)
        t = cluster.add_terminal("C01")
        assert cluster.wait_synced()
        before = {r[0]: r[1] for r in conn.execute("SELECT id, balance_fen FROM accounts")}
        victim = next(d for d in world.diners if d.unit_id != "U01")
        store = t.terminal.store
        forged = store.record_sale(  # what a compromised terminal journals, past authorize()
            terminal_id=t.terminal.config.terminal_id,
            canteen_id="C01",
            card_id=victim.card_id,
            holder_id=victim.holder_id,
            amount_fen=10_000_000,
            subsidy_fen=0,
            self_fen=10_000_000,
            occurred_at_ms=clock.now_ms(),
            kind="shop",
            announced=True,
        )
        assert wait_until(lambda: store.pending_count() == 0, 20)
        status, reason = store.conn.execute(
            "SELECT status, reason FROM journal WHERE seq = ?", (forged.seq,)
        ).fetchone()
        assert (status, reason) == ("rejected", "sale_over_limit")
        assert t.terminal.sync.stats.quarantined == 1 and t.terminal.sync.stats.resends == 0
        after = {r[0]: r[1] for r in conn.execute("SELECT id, balance_fen FROM accounts")}
        assert after == before
        blocked = conn.execute("SELECT blocked FROM holders WHERE id = ?", (victim.holder_id,)).fetchone()[0]
        assert not blocked
        assert _held(conn) == [("sale_over_limit", "pending")]
        assert all_violations(conn) == []
        conn.close()


def test_the_api_lists_held_sales_by_role_and_an_admin_decides(client, conn, clock) -> None:  # noqa: ANN001
    w = MoneyWorld(conn, clock)
    w.allocate("U01", "2026Q1")
    first = w.sell("K001", 1_300, meal_period="lunch")  # lunch costs ¥12.00 at C01
    second = w.sell("K001", 1_400, meal_period="lunch")
    assert first.status == second.status == "quarantined"
    with write_txn(conn):
        tokens = {
            role: create_token(conn, role, clock.now_ms(), **scope)
            for role, scope in (
                ("admin", {}),
                ("auditor", {}),
                ("operator", {"operator": OPERATOR}),
                ("clerk", {"unit_id": "U01"}),
            )
        }

    def call(role: str, method: str, url: str, body: dict | None = None):  # noqa: ANN202
        return client.open(url, method=method, json=body, headers={"Authorization": f"Bearer {tokens[role]}"})

    listed = call("auditor", "GET", "/api/v1/quarantine").get_json()
    assert listed["counts"] == {"pending": 2, "accepted": 0, "rejected": 0}
    assert [s["reason"] for s in listed["sales"]] == ["sale_price_mismatch", "sale_price_mismatch"]
    assert len(call("operator", "GET", "/api/v1/quarantine").get_json()["sales"]) == 2  # C01 is theirs
    assert call("clerk", "GET", "/api/v1/quarantine").status_code == 403  # not a clerk's business
    tid = w.terminals["C01"].terminal_id
    assert call("auditor", "POST", f"/api/v1/quarantine/{tid}/1/accept").status_code == 403
    assert (
        call("admin", "POST", f"/api/v1/quarantine/{tid}/2/reject", {}).get_json()["code"] == "invalid_input"
    )
    accepted = call("admin", "POST", f"/api/v1/quarantine/{tid}/1/accept", {"note": "已核实"})
    assert accepted.status_code == 200 and accepted.get_json()["result"]["status"] == "applied"
    again = call("admin", "POST", f"/api/v1/quarantine/{tid}/1/accept")
    assert (again.status_code, again.get_json()["code"]) == (409, "quarantine_decided")
    rejected = call("admin", "POST", f"/api/v1/quarantine/{tid}/2/reject", {"reason": "金额异常"})
    assert rejected.get_json()["state"] == "rejected"
    missing = call("admin", "POST", f"/api/v1/quarantine/{tid}/99/reject", {"reason": "x"})
    assert (missing.status_code, missing.get_json()["code"]) == (404, "quarantine_not_found")
    seen = call("operator", "GET", "/api/v1/quarantine?state=rejected").get_json()["sales"]
    assert [(s["seq"], s["decision_note"]) for s in seen] == [(2, "金额异常")]
    assert all_violations(conn) == []


def test_the_clerks_commands_report_and_decide_held_sales(tmp_path: Path) -> None:
    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["--home", str(tmp_path), *args])
        return result.exit_code, result.stdout if "--json" in args else result.output

    assert run("init")[0] == 0
    conn = open_db(tmp_path / "server" / "canteen.sqlite")
    now = SystemClock().now_ms()
    with write_txn(conn):
        units.add_unit(conn, "U01", "市财政局", 30_000)
        units.add_canteen(conn, "C01", "财政局食堂", "U01", operator="湘味餐饮有限公司", now_ms=now)
        units.add_holder(conn, "H1", "U01", "张伟", "K1", now_ms=now)
    creds = terminal(conn, "C01", now)
    held = sale(creds, 1, "K1", 500, YEAR_2099_MS)
    IngestWorker(conn, FakeClock(now), lambda *_: True).process(
        [(topics.sales(creds.terminal_id), signed_batch(creds, [held], now))]
    )
    conn.close()
    code, out = run("report", "quarantine")
    assert code == 0 and "待处理 pending 1" in out and "消费时间晚于当前时间" in out and "¥5.00" in out
    code, out = run("check", "--json")
    assert code == 0 and json.loads(out)["quarantine"]["pending"][0]["reason"] == "sale_time_future"
    code, out = run("quarantine", "reject", creds.terminal_id, "1", "--reason", "日期错误")
    assert code == 0 and "已拒绝" in out
    code, out = run("quarantine", "accept", creds.terminal_id, "1")
    assert code == 2 and "quarantine_decided" in out
    code, out = run("report", "quarantine", "--json", "--state", "rejected")
    assert [s["decision_note"] for s in json.loads(out)["sales"]] == ["日期错误"]
