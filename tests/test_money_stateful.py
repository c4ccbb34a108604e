"""A hypothesis state machine over a real SQLite database: random sequences of allocations,
top-ups, sales (duplicates, offline overdrafts, late ones dated in closed quarters or a
cleared year), lost and replaced cards, quarterly settlements and year-end clearings.

After every step: every ledger and money invariant holds (``server.closing.check.all_violations``: integer
entries, sum zero, balances = entries, no negative purse without a recorded overdraft,
each sale applied once, each sale's entries = its split, statements untouched and
reconciled, clearings reconciled, no withdrawal); each sale was applied at most once and
a resent sale got its first result back; a closed quarter's statements and a year's
clearing amounts never change; and the money that came in from outside (unit budgets,
bank top-ups) is exactly what the model says came in.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from server.books import ledger
from server.books.periods import Quarter, year_cutoff_ms
from server.closing.check import all_violations
from server.closing.clearing import close_year
from server.closing.settlement import last_settled, settle_quarter, settlement_document
from server.infra.db import open_db, write_txn
from server.registry import cards, funds
from server.registry import units as registry
from server.registry.terminals import provision
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, china_datetime, ms_from_china
from shared.errors import DomainError
from shared.protocol import Ack, Sale, SaleBatch, open_envelope, seal_hmac, topics

DAY_MS = 86_400_000
HOLDERS = [f"H{i}" for i in range(1, 7)]
UNITS = {"U1": 10_000, "U2": 8_000}
CANTEENS = ("C1", "C2")
START = "2026-09-10T12:00"  # a quarter end and the year end within reach of a run
FIRST_QUARTER = Quarter(2026, 3)


class MoneyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn = open_db(":memory:")
        self.clock = FakeClock(ms_from_china(START))
        now = self.clock.now_ms()
        with write_txn(self.conn):
            for unit_id, std in UNITS.items():
                registry.add_unit(self.conn, unit_id, f"单位{unit_id}", std)
            registry.add_canteen(self.conn, "C1", "食堂一", "U1", operator="湘味餐饮", now_ms=now)
            registry.add_canteen(
                self.conn, "C2", "食堂二", "U2", operator="服务中心", self_operated=True, now_ms=now
            )
            for i, h in enumerate(HOLDERS):
                registry.add_holder(self.conn, h, "U1" if i % 2 else "U2", f"职工{h}", f"K-{h}-0", now_ms=now)
            # generous limits, terminals provisioned long ago: this machine sells any amount on
            # any earlier day (plausibility has its own tests, tests/test_quarantine.py)
            registry.set_terminal_settings(
                self.conn, {"risk": {"max_sale_fen": 10_000_000, "max_offline_total_fen": 10_000_000}}, now
            )
            since = now - 5 * 366 * 86_400_000
            self.terminals = {c: provision(self.conn, c, since, "00" * 32, f"T-{c}") for c in CANTEENS}
        self.card = {h: f"K-{h}-0" for h in HOLDERS}
        self.old_cards: dict[str, list[str]] = {h: [] for h in HOLDERS}
        self.seq = dict.fromkeys(CANTEENS, 0)
        self.first_results: dict[tuple[str, int], Any] = {}
        self.sent: list[Sale] = []
        self.acks: list[Ack] = []
        self.allocated_fen = 0
        self.unit_of = {h: "U1" if i % 2 else "U2" for i, h in enumerate(HOLDERS)}
        self.credits: list[tuple[str, str, int]] = []  # (holder, quarter, fen)
        self.subsidy_spent: list[tuple[str, int, int]] = []  # (holder, occurred_at_ms, fen from the purse)
        # the model of the subsidy by year: a year's allocations pay only for its sales
        self.subsidy_left: dict[tuple[str, int], int] = defaultdict(int)  # (holder, year) -> fen
        self.topped_up_fen = 0
        self.statements: dict[str, dict[str, Any]] = {}
        self.clearings: dict[int, list[tuple[Any, ...]]] = {}
        self.worker = IngestWorker(self.conn, self.clock, self._collect)
        for unit_id in UNITS:
            self.allocate(unit_id, 0, None)

    def teardown(self) -> None:
        self.conn.close()

    def _collect(self, topic: str, payload: bytes, retain: bool) -> bool:
        creds = next(c for c in self.terminals.values() if topic == topics.ack(c.terminal_id))
        env = open_envelope(payload, secret_for=lambda _s: bytes.fromhex(creds.secret_hex))
        self.acks.append(Ack.from_body(env.body))
        return True

    def _send(self, sales: list[Sale]) -> list[Any]:
        creds = self.terminals[sales[0].canteen_id]
        body = SaleBatch(tuple(sales)).to_body()
        wire = seal_hmac(
            "sale_batch", creds.terminal_id, body, bytes.fromhex(creds.secret_hex), self.clock.now_ms()
        )
        before = len(self.acks)
        self.worker.process([(topics.sales(creds.terminal_id), wire)])
        assert len(self.acks) == before + 1
        return list(self.acks[-1].results)

    # --- money in ------------------------------------------------------------------------

    @rule(
        unit=st.sampled_from(sorted(UNITS)),
        ahead=st.integers(0, 1),
        per_person=st.none() | st.integers(1, 50_000),
    )
    def allocate(self, unit: str, ahead: int, per_person: int | None) -> None:
        q = Quarter.of_ms(self.clock.now_ms())
        q = q.next() if ahead else q
        try:
            with write_txn(self.conn):
                r = funds.allocate(self.conn, unit, str(q), per_person, self.clock.now_ms())
        except DomainError as exc:
            assert exc.code in ("already_exists", "period_closed")
            return
        self.allocated_fen += r["total_fen"]
        self.credits += [(h, str(q), r["per_person_fen"]) for h in HOLDERS if self.unit_of[h] == unit]
        for h in HOLDERS:
            if self.unit_of[h] == unit:
                self.subsidy_left[h, q.year] += r["per_person_fen"]

    @rule(holder=st.sampled_from(HOLDERS), amount=st.integers(1, 20_000))
    def topup(self, holder: str, amount: int) -> None:
        with write_txn(self.conn):
            funds.topup(self.conn, self.card[holder], amount, self.clock.now_ms())
        self.topped_up_fen += amount

    # --- sales ---------------------------------------------------------------------------

    @rule(
        holder=st.sampled_from(HOLDERS),
        canteen=st.sampled_from(CANTEENS),
        amounts=st.lists(st.integers(1, 15_000), min_size=1, max_size=3),
        days_ago=st.integers(0, 45),
        old_card=st.booleans(),
        offline=st.booleans(),
    )
    def sell(
        self, holder: str, canteen: str, amounts: list[int], days_ago: int, old_card: bool, offline: bool
    ) -> None:
        """Sales as a terminal journaled them, possibly days ago (offline, now arriving:
        late for a closed quarter or a cleared year), possibly on a card since reported lost."""
        at = max(self.clock.now_ms() - days_ago * DAY_MS, ms_from_china("2026-08-01T12:00"))
        self._sell(holder, canteen, amounts, at, old_card, offline)

    @precondition(lambda self: self.statements or self.clearings)
    @rule(
        holder=st.sampled_from(HOLDERS),
        canteen=st.sampled_from(CANTEENS),
        amounts=st.lists(st.integers(1, 15_000), min_size=1, max_size=2),
        hours_before=st.integers(1, 24 * 20),
    )
    def sell_late(self, holder: str, canteen: str, amounts: list[int], hours_before: int) -> None:
        """An offline terminal's sales dated shortly before a period that has since closed."""
        ends = [Quarter.parse(q).end_ms for q in self.statements] + [
            year_cutoff_ms(y) for y in self.clearings
        ]
        self._sell(holder, canteen, amounts, max(ends) - hours_before * 3_600_000, False, True)

    @precondition(lambda self: self.clock.now_ms() >= year_cutoff_ms(2026))
    @rule(
        holder=st.sampled_from(HOLDERS),
        canteen=st.sampled_from(CANTEENS),
        amount=st.integers(1, 15_000),
        minutes=st.integers(-180, 180),
        offline=st.booleans(),
    )
    def sell_around_new_year(
        self, holder: str, canteen: str, amount: int, minutes: int, offline: bool
    ) -> None:
        """A sale just before or just after 00:00 on 1 January (before or after the clearing
        ran): it spends only the subsidy of the year it is dated in."""
        self._sell(holder, canteen, [amount], year_cutoff_ms(2026) + minutes * 60_000, False, offline)

    def _sell(
        self, holder: str, canteen: str, amounts: list[int], at: int, old_card: bool, offline: bool
    ) -> None:
        card = self.old_cards[holder][-1] if old_card and self.old_cards[holder] else self.card[holder]
        sales = []
        for amount in amounts:
            self.seq[canteen] += 1
            sales.append(
                Sale(
                    f"T-{canteen}",
                    self.seq[canteen],
                    uuid.uuid4().hex,
                    card,
                    canteen,
                    amount,
                    at,
                    kind="shop",  # a typed amount: any amount within the limits
                    subsidy_fen=amount,
                    offline=offline,
                )
            )
        for s, r in zip(sales, self._send(sales), strict=True):
            assert r.status == "applied", r
            event(f"sale: overdraft={r.overdraft_fen > 0}")
            cleared = self.conn.execute(
                "SELECT cleared_subsidy_fen FROM sales WHERE terminal_id = ? AND seq = ?",
                (s.terminal_id, s.seq),
            ).fetchone()[0]
            self.subsidy_spent.append((holder, at, r.subsidy_fen - cleared))
            # spend order within the sale's year only (a cleared year's purse is empty: what
            # its subsidy would have paid came back out of the refund, as ``cleared``)
            year = china_datetime(at).year
            assert r.subsidy_fen - cleared == min(
                max(self.subsidy_left[holder, year], 0), s.amount_fen - cleared
            )
            self.subsidy_left[holder, year] -= r.subsidy_fen - cleared
            assert r.subsidy_fen + r.self_fen == s.amount_fen
            self.first_results[(s.terminal_id, s.seq)] = r
            self.sent.append(s)

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """A terminal that lost an ack resends; the copy gets the first result."""
        s = data.draw(st.sampled_from(self.sent))
        (r,) = self._send([s])
        first = self.first_results[(s.terminal_id, s.seq)]
        assert r.status == "duplicate"
        assert (r.subsidy_fen, r.self_fen, r.overdraft_fen, r.balance) == (
            first.subsidy_fen,
            first.self_fen,
            first.overdraft_fen,
            first.balance,
        )

    @rule(holder=st.sampled_from(HOLDERS))
    def lose_card(self, holder: str) -> None:
        old = self.card[holder]
        new = f"K-{holder}-{len(self.old_cards[holder]) + 1}"
        with write_txn(self.conn):
            cards.report_lost(self.conn, old, self.clock.now_ms())
            cards.replace(self.conn, old, new, self.clock.now_ms())
        self.old_cards[holder].append(old)
        self.card[holder] = new

    # --- time and closing ------------------------------------------------------------------

    @rule(days=st.integers(1, 60))
    def advance(self, days: int) -> None:
        self.clock.advance_ms(days * DAY_MS)

    @rule()
    def settle(self) -> None:
        last = last_settled(self.conn)
        q = last.next() if last else FIRST_QUARTER
        if self.clock.now_ms() < q.end_ms:
            return
        with write_txn(self.conn):
            doc, created = settle_quarter(self.conn, str(q), self.clock.now_ms(), force=True)
        assert created
        event(f"settled {q}")
        for st_ in doc["statements"]:
            assert (
                st_["gross_fen"] + st_["adjustments_fen"]
                == st_["withheld_fen"] + st_["fee_fen"] + st_["net_fen"]
            )
            assert st_["fee_fen"] == 0 or not st_["self_operated"]
        self.statements[str(q)] = doc

    @rule()
    def clear_year(self) -> None:
        year = 2026 if self.clock.now_ms() >= year_cutoff_ms(2026) else None
        if year is None or year in self.clearings:
            return
        with write_txn(self.conn):
            close_year(self.conn, year, self.clock.now_ms(), refund_to="unit", force=True)
        self.clearings[year] = self._clearing_amounts(year)
        cutoff = year_cutoff_ms(year)
        for h in HOLDERS:
            # the year's allocations less its sales (also late ones that came in before the
            # clearing): the balance at the year end, whatever day in January this is and
            # whatever was sold since 1 January
            expected = self.subsidy_left[h, year]
            cleared = sum(f for hh, _, f in self.clearings[year] if hh == h)
            assert cleared == expected, (h, expected, cleared)
            assert ledger.balance(self.conn, ledger.subsidy_purse(h, year)) == 0
            assert (
                ledger.balance(self.conn, ledger.subsidy_purse(h, year + 1)) == self.subsidy_left[h, year + 1]
            )
            self.subsidy_left[h, year] = 0
        january = any(at >= cutoff for _, at, fen in self.subsidy_spent)
        event(f"cleared a year; sold in January before: {january}")

    def _clearing_amounts(self, year: int) -> list[tuple[Any, ...]]:
        return [
            tuple(r)
            for r in self.conn.execute(
                "SELECT holder_id, unit_id, amount_fen FROM clearing_lines WHERE year = ? "
                "ORDER BY holder_id, unit_id",
                (year,),
            )
        ]

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def ledger_holds(self) -> None:
        assert all_violations(self.conn) == []
        late = self.conn.execute("SELECT count(*) FROM late_sales").fetchone()[0]
        clawed = self.conn.execute("SELECT count(*) FROM sales WHERE cleared_subsidy_fen > 0").fetchone()[0]
        event(f"late sales seen: {late > 0}; clawbacks seen: {clawed > 0}")

    @invariant()
    def each_sale_applied_once(self) -> None:
        applied = self.conn.execute("SELECT count(*) FROM sales WHERE status = 'applied'").fetchone()[0]
        posted = self.conn.execute("SELECT count(*) FROM txns WHERE kind = 'sale'").fetchone()[0]
        assert applied == posted == len(self.first_results)

    @invariant()
    def closed_periods_never_change(self) -> None:
        for q, doc in self.statements.items():
            assert settlement_document(self.conn, q) == doc
        for year, lines in self.clearings.items():
            assert self._clearing_amounts(year) == lines

    @invariant()
    def money_from_outside_is_what_came_in(self) -> None:
        budgets = sum(ledger.balance(self.conn, ledger.unit_budget(u)) for u in UNITS)
        assert -budgets == self.allocated_fen
        assert -ledger.balance(self.conn, ledger.BANK_TOPUP) == self.topped_up_fen
        assert ledger.balance(self.conn, ledger.BUREAU_MEAL_FUND) == 0
        assert ledger.balance(self.conn, ledger.SYSTEM_INCOME) == 0


TestMoneyMachine = MoneyMachine.TestCase
TestMoneyMachine.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
