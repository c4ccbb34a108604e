"""The simulated city, written into the server's database through the server's own functions.

The chaos run's three units (one without a canteen), its shop items and its tight offline
limits (:mod:`simulator.chaos.world`), with one canteen per two terminals serving
breakfast, lunch and dinner (staff and visitor prices, one meal per period), ``diners``
staff per terminal spread over the units, the current quarter's subsidy allocated, a few
self top-ups, and the terminals provisioned. Balances are small on purpose: refusals,
races between terminals and offline overdrafts really happen.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from server.books.periods import Quarter
from server.infra.db import write_txn
from server.registry import funds
from server.registry.terminals import TerminalCredentials
from simulator.chaos.world import (
    ITEMS,
    RISK,
    UNITS,
    add_city,
    canteen_ids,
    provision_terminals,
    start_balance_fen,
)
from simulator.harness.world import meal
from simulator.vopr.prng import Prng

MEALS = {
    "breakfast": meal("06:00", "10:00", 500, 600),
    "lunch": meal("10:00", "15:00", 1200, 1500),
    "dinner": meal("15:00", "22:00", 1000, 1300),
}
# when the diners come for each meal (Asia/Shanghai hour), and how long a session lasts
SESSIONS = (("breakfast", 7), ("lunch", 12), ("dinner", 18))


@dataclass
class Diner:
    holder_id: str
    unit_id: str
    card_id: str  # the card they carry now (a replacement after a loss)
    cards: list[str] = field(default_factory=list)  # every card they ever held


@dataclass
class World:
    diners: list[Diner]
    terminals: list[TerminalCredentials]
    canteen_unit: dict[str, str]
    start_balance_fen: dict[str, int]  # holder → subsidy + self before the run
    allocated_fen: dict[tuple[str, int], int]  # (holder, year) → subsidy allocated before the run
    risk: dict[str, int] = field(default_factory=lambda: dict(RISK))

    @property
    def units(self) -> list[str]:
        return [u for u, _, _ in UNITS]

    def holders_of(self, unit_id: str) -> list[str]:
        return [d.holder_id for d in self.diners if d.unit_id == unit_id]

    def prices(self) -> dict[str, int]:
        """What an honest terminal charges: the meals' prices and the items' (for the thief)."""
        return {"meal_fen": MEALS["lunch"]["price_fen"], "item_fen": ITEMS["tissue"]["price_fen"]}


def build_world(
    conn: sqlite3.Connection, now_ms: int, rng: Prng, *, terminals: int, diners: int, public_key: str
) -> World:
    canteens = canteen_ids(terminals)
    with write_txn(conn):
        canteen_unit, staff = add_city(
            conn,
            now_ms,
            canteens=canteens,
            diners=diners,
            config=lambda: {"meals": MEALS, "meal_limit": 1, "items": ITEMS},
        )
        people = [Diner(holder, unit, card, [card]) for holder, unit, card in staff]
        quarter = Quarter.of_ms(now_ms)
        allocated: dict[tuple[str, int], int] = {}
        for uid in sorted({d.unit_id for d in people}):
            done = funds.allocate(conn, uid, str(quarter), None, now_ms)
            for d in people:
                if d.unit_id == uid:
                    allocated[(d.holder_id, quarter.year)] = done["per_person_fen"]
        for d in rng.sample(people, k=max(1, diners // 3)):
            funds.topup(
                conn, d.card_id, rng.pick([1_000, 3_000, 10_000]), now_ms, ref=f"vopr-start-{d.card_id}"
            )
        creds = provision_terminals(conn, canteens, terminals, now_ms, public_key)
    start = {d.holder_id: start_balance_fen(conn, d.holder_id) for d in people}
    return World(people, creds, canteen_unit, start, allocated)
