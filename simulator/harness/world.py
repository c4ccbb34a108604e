"""Building a small city in the server: units, canteens, diners, money.

Used by the demo and by tests that need a populated server. It calls the server's own
service functions inside real transactions (as the clerks' batch jobs do), so the ledger,
the registry and the downstream deltas are exactly what production would hold.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from server.infra.db import write_txn
from server.registry import funds
from server.registry import units as registry


def meal(start: str, end: str, price_fen: int, visitor_price_fen: int | None = None) -> dict[str, Any]:
    return {"start": start, "end": end, "price_fen": price_fen, "visitor_price_fen": visitor_price_fen}


@dataclass
class Diner:
    holder_id: str
    card_id: str
    name: str
    unit_id: str


@dataclass
class World:
    units: dict[str, str] = field(default_factory=dict)  # id -> name
    canteens: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {name, unit_id}
    diners: list[Diner] = field(default_factory=list)


SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


def demo_world(
    conn: sqlite3.Connection, now_ms: int, diners: int = 50, seed: int = 7, quarter: str = "2026Q4"
) -> World:
    """Three units (one without a canteen), two canteens, ``diners`` staff, a quarter's
    subsidy allocated and a few self top-ups."""
    rng = random.Random(seed)
    w = World()
    units = [("U01", "市财政局", 30_000), ("U02", "市教育局", 30_000), ("U03", "市审计局", 24_000)]
    items = {
        "tissue": {"name": "抽纸", "price_fen": 350, "reference_price_fen": 400},
        "water": {"name": "矿泉水", "price_fen": 200, "reference_price_fen": 200},
    }
    with write_txn(conn):
        for uid, name, std in units:
            registry.add_unit(conn, uid, name, std)
            w.units[uid] = name
        registry.add_canteen(
            conn,
            "C01",
            "财政局食堂",
            "U01",
            operator="湘味餐饮有限公司",
            self_operated=False,
            now_ms=now_ms,
            config={
                "meals": {
                    "breakfast": meal("07:00", "09:00", 500),
                    "lunch": meal("11:30", "13:30", 1200, 1500),
                    "dinner": meal("17:30", "19:30", 1000),
                },
                "items": items,
            },
        )
        registry.add_canteen(
            conn,
            "C02",
            "教育局食堂",
            "U02",
            operator="市教育局机关服务中心",
            self_operated=True,
            now_ms=now_ms,
            config={"meals": {"lunch": meal("11:30", "13:30", 1000, 1200)}, "items": items},
        )
        w.canteens = {
            "C01": {"name": "财政局食堂", "unit_id": "U01"},
            "C02": {"name": "教育局食堂", "unit_id": "U02"},
        }
        for i in range(diners):
            unit_id = units[i % len(units)][0]
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            d = Diner(f"H{i + 1:05d}", f"C{i + 1:05d}", name, unit_id)
            registry.add_holder(
                conn, d.holder_id, unit_id, name, d.card_id, staff_no=f"{unit_id}-{i + 1:04d}", now_ms=now_ms
            )
            w.diners.append(d)
        for uid, _, _ in units:
            funds.allocate(conn, uid, quarter, None, now_ms)
        for d in rng.sample(w.diners, k=max(1, diners // 5)):
            funds.topup(
                conn, d.card_id, rng.choice([2000, 5000, 10000]), now_ms, ref=f"demo-topup-{d.card_id}"
            )
    return w
