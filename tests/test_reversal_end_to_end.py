"""Reversals end to end (issue 13): the operator's keypad flow on a real terminal, its own
outbox through a real broker to the real server and ledger, online and offline; the diner's
history shows it; the audit counts reversals journaled against reversals applied."""

from __future__ import annotations

from typing import Any

import pytest

from server.books import ledger
from server.infra.db import write_txn
from server.registry import canteens
from shared.clock import FakeClock, ms_from_china
from simulator.harness.cluster import Cluster
from simulator.harness.driver import Harness, Till
from simulator.harness.world import World, demo_world
from terminal.devices import Order

pytestmark = pytest.mark.broker

OPERATOR, PIN = "OP0001", "246810"


class Counter:
    def __init__(self, cluster: Cluster, clock: FakeClock) -> None:
        self.cluster, self.clock = cluster, clock
        conn = cluster.db()
        self.world: World = demo_world(conn, clock.now_ms(), diners=4)
        with write_txn(conn):  # the canteen's operator, PIN typed once (stored as a hash)
            canteens.update(
                conn, "C01", clock.now_ms(), config={"operators": {OPERATOR: {"name": "王五", "pin": PIN}}}
            )
        conn.close()
        self.h = Harness(cluster)
        self.till: Till = self.h.add_till("C01", "财政局食堂")
        self.h.settle_down()

    def card(self) -> str:
        return next(d.card_id for d in self.world.diners if d.unit_id == "U01")

    def holder(self, card: str) -> str:
        return str(self.h.admin.get(f"/api/v1/cards/{card}")["holder_id"])

    def purses(self, card: str) -> int:
        h = self.h.admin.get(f"/api/v1/holders/{self.holder(card)}")
        return int(h["subsidy_fen"]) + int(h["self_fen"])

    def buy(self, card: str, fen: int) -> dict[str, Any]:
        answer = self.till.present_card(card, Order("shop", amount_fen=fen))
        assert answer["event"] == "approved", answer
        return answer


@pytest.fixture
def counter(broker, tmp_path):  # noqa: ANN001, ANN201
    clock = FakeClock(ms_from_china("2026-11-26T12:00"))
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        c = Counter(cluster, clock)
        try:
            yield c
        finally:
            c.h.close()


def test_a_double_charge_reversed_on_the_keypad_gives_the_money_back_once(counter: Counter) -> None:
    card = counter.card()
    before = counter.purses(card)
    counter.buy(card, 1200)
    counter.clock.advance_ms(20_000)
    second = counter.buy(card, 1200)  # charged twice
    counter.clock.advance_ms(60_000)
    answer = counter.till.reverse(OPERATOR, PIN, card=card)
    assert answer["event"] == "reversed" and answer["sale_uuid"] == second["uuid"]
    counter.h.settle_down()
    assert counter.purses(card) == before - 1200
    history = counter.h.admin.get(f"/api/v1/holders/{counter.holder(card)}/sales")
    assert [(s["amount_fen"], s["reversed"]) for s in history] == [(1200, True), (1200, False)]
    assert history[0]["reversal"]["amount_fen"] == 1200
    assert history[0]["reversal"]["id"] == f"{counter.till.id}/R1"
    audit = counter.cluster.audit()
    assert (audit.reversals_approved, audit.reversals_applied) == (1, 1)
    assert audit.mismatch_details == [] and audit.violations == [] and audit.pending == 0
    conn = counter.cluster.db()
    assert ledger.balance(conn, ledger.canteen_payable("C01")) == 1200
    conn.close()


def test_an_offline_reversal_is_synced_later(counter: Counter) -> None:
    card = counter.card()
    before = counter.purses(card)
    counter.h.cut(counter.till)
    sale = counter.buy(card, 900)
    assert sale["offline"]
    counter.clock.advance_ms(120_000)
    answer = counter.till.reverse(OPERATOR, PIN)
    assert answer["event"] == "reversed" and answer["offline"]
    assert counter.till.pending() == 2  # the sale and its reversal wait in their outboxes
    counter.h.heal(counter.till)
    counter.h.settle_down()
    assert counter.purses(card) == before
    audit = counter.cluster.audit()
    assert (audit.approved, audit.applied, audit.reversals_approved, audit.reversals_applied) == (1, 1, 1, 1)
    assert audit.violations == [] and audit.mismatch_details == []


def test_a_wrong_pin_reverses_nothing(counter: Counter) -> None:
    card = counter.card()
    counter.buy(card, 500)
    answer = counter.till.reverse(OPERATOR, "135790")
    assert (answer["event"], answer["reason"]) == ("reversal_declined", "operator_pin_wrong")
    counter.h.settle_down()
    assert counter.cluster.audit().reversals_applied == 0
