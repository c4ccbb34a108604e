"""``make demo``: one working day of a small city, with an outage, in well under a minute.

It is ``canteen-sim city`` with small numbers (:mod:`simulator.city.run`): six units — three
run a canteen, three do not — 300 staff, two real terminals per canteen with simulated card
readers, QR scanners and cameras, an MQTT broker (embedded by default) and the real server.
Breakfast, the lunch rush with its cross-unit visits, shop sales, top-ups and dinner are paid
by card, phone QR code and face. At 11:50 one terminal of the busiest canteen loses its
return path (its sales reach the server, the acknowledgements do not), at 12:00 its whole
line, and at 12:40 the line is back: it serves offline meanwhile, resends what was not
acknowledged, and the server answers the copies as duplicates. Then the quarter is settled,
the year cleared, and every terminal journal is audited against the server's ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator.city.render import consistent
from simulator.city.render import render as render_city
from simulator.city.run import CityOptions, run_city


@dataclass
class DemoOptions:
    diners: int = 300
    seed: int = 7
    broker: str = "embedded"


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """The demo's result: the city summary, whose audit keys (``approved``, ``applied``,
    ``pending``, ``duplicates_ignored``, ``ledger_sum_fen``, ``mismatches``) say whether
    every sale was applied exactly once."""
    return run_city(
        CityOptions(
            units=6, diners=opts.diners, canteens=3, days=1, terminals=2, seed=opts.seed, broker=opts.broker
        )
    )


def render(result: dict[str, Any]) -> str:
    body = render_city(result).split("\n", 1)[1]
    return "食堂一卡通 演示 · Canteen one-card demo: one day of a small city (canteen-sim city)\n" + body


def ok(result: dict[str, Any]) -> bool:
    return consistent(result)
