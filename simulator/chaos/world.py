"""The small, poor city a chaos run plays in, written straight into the server's database.

Built before the server process starts, with the server's own service functions inside
real transactions (as the clerks' batch jobs do): three units, one canteen per two
terminals, each serving a meal all day (the run uses the wall clock, whatever the hour),
shop items, an operator who may reverse sales (冲正), ``diners`` staff with small balances
(so that refusals, races and overdrafts really happen), the city's offline risk limits, and
the terminals provisioned.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.books import ledger
from server.infra.db import write_txn
from server.registry import funds
from server.registry import units as registry
from server.registry.terminals import TerminalCredentials, provision
from shared.pin_hash import pin_record
from simulator.chaos.plan import OPERATOR_CARD, OPERATOR_PIN
from simulator.harness.world import meal

UNITS = (("U01", "市财政局", 3_000), ("U02", "市教育局", 5_000), ("U03", "市审计局", 1_500))
ITEMS = {
    "tissue": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400},
    "water": {"name": "矿泉水", "price_fen": 200, "reference_price_fen": 200},
}
# The city's offline limits for this run (terminal.rules.RiskLimits): small enough to bite.
RISK = {
    "max_sale_fen": 5_000,
    "offline_allowance_fen": 300,
    "max_offline_total_fen": 4_000,
    "max_offline_sales": 4,
    "max_clock_offset_ms": 5 * 60_000,
}


@dataclass(frozen=True)
class ChaosWorld:
    cards: list[str]
    holders: dict[str, str]  # card -> holder
    start_balance_fen: dict[str, int]  # holder -> subsidy + self before the run
    terminals: list[TerminalCredentials]
    risk: dict[str, int]
    card_unit: dict[str, str] = field(default_factory=dict)  # card -> its holder's unit
    canteen_unit: dict[str, str] = field(default_factory=dict)  # canteen -> the unit it belongs to

    def cards_of_other_units(self, canteen_id: str) -> list[str]:
        """Cards whose holders are not staff of the canteen's unit (visitors there)."""
        own = self.canteen_unit.get(canteen_id)
        return sorted(c for c, u in self.card_unit.items() if u != own)

    @property
    def offline_allowance_fen(self) -> int:
        return self.risk["offline_allowance_fen"]


def canteen_ids(terminals: int) -> list[str]:
    """One canteen per two terminals."""
    return [f"C{i + 1:02d}" for i in range((terminals + 1) // 2)]


def add_city(
    conn: sqlite3.Connection,
    now_ms: int,
    *,
    canteens: list[str],
    diners: int,
    config: Callable[[], dict[str, Any]],
) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """The city's risk limits, its units, the canteens (each with a ``config()`` of its own)
    and ``diners``
    staff spread over the units, inside the caller's transaction. Returns each canteen's
    unit and the staff as (holder, unit, card)."""
    registry.set_terminal_settings(conn, {"risk": RISK}, now_ms)
    for uid, name, std in UNITS:
        registry.add_unit(conn, uid, name, std)
    canteen_unit: dict[str, str] = {}
    for i, cid in enumerate(canteens):
        unit = UNITS[i % 2][0]  # U03 has no canteen: its staff always eat elsewhere
        canteen_unit[cid] = unit
        registry.add_canteen(
            conn,
            cid,
            f"第{i + 1}食堂",
            unit,
            operator=f"运营方{i + 1}",
            self_operated=i % 2 == 1,
            now_ms=now_ms,
            config=config(),
        )
    staff: list[tuple[str, str, str]] = []
    for i in range(diners):
        unit = UNITS[i % len(UNITS)][0]
        holder, card = f"H{i + 1:05d}", f"K{i + 1:05d}"
        registry.add_holder(
            conn, holder, unit, f"职工{i + 1}", card, staff_no=f"{unit}-{i + 1:04d}", now_ms=now_ms
        )
        staff.append((holder, unit, card))
    return canteen_unit, staff


def provision_terminals(
    conn: sqlite3.Connection, canteens: list[str], terminals: int, now_ms: int, public_key: str
) -> list[TerminalCredentials]:
    """Terminals ``T1``…``Tn``, two to a canteen."""
    return [
        provision(conn, canteens[t // 2], now_ms, public_key, terminal_id=f"T{t + 1}")
        for t in range(terminals)
    ]


def start_balance_fen(conn: sqlite3.Connection, holder_id: str) -> int:
    """What a holder may spend before the run: their subsidy over all years and their own purse."""
    return sum(ledger.subsidy_by_year(conn, holder_id).values()) + ledger.balance(
        conn, ledger.self_purse(holder_id)
    )


def build_world(
    conn: sqlite3.Connection,
    now_ms: int,
    *,
    seed: int,
    diners: int,
    terminals: int,
    public_key: str,
    quarter: str,
) -> ChaosWorld:
    rng = random.Random(seed ^ 0x5EED)
    canteens = canteen_ids(terminals)

    def config() -> dict[str, Any]:
        return {
            "meals": {"lunch": meal("00:00", "24:00", 1200, 1500)},
            "meal_limit": 2,
            "items": ITEMS,
            # the operator who reverses sales (冲正), a salt of their own in each canteen;
            # the window is the day's whole run
            "operators": {OPERATOR_CARD: {"name": "值班员", "pin_hash": pin_record(OPERATOR_PIN)}},
        }

    with write_txn(conn):
        canteen_unit, staff = add_city(conn, now_ms, canteens=canteens, diners=diners, config=config)
        cards = [card for _, _, card in staff]
        holders = {card: holder for holder, _, card in staff}
        card_unit = {card: unit for _, unit, card in staff}
        for uid in sorted({unit for _, unit, _ in staff}):
            funds.allocate(conn, uid, quarter, None, now_ms)  # the quarter's subsidy, per person
        for card in rng.sample(cards, k=max(1, diners // 4)):
            funds.topup(conn, card, rng.choice([500, 1_000, 3_000]), now_ms, ref=f"chaos-topup-{card}")
        creds = provision_terminals(conn, canteens, terminals, now_ms, public_key)
    start = {h: start_balance_fen(conn, h) for h in holders.values()}
    return ChaosWorld(cards, holders, start, creds, dict(RISK), card_unit, canteen_unit)
