"""``make demo``: one lunch in two canteens, one terminal loses its network for a while.

Three units (one without a canteen), 50 diners, 3 terminals in 2 canteens, on a clock that
runs 30× faster than real time from 11:40. During the rush terminal T0002 first loses its
return path (sales reach the server, acknowledgements do not), then its whole network, and
keeps serving from its cache; when it comes back it resends, the server answers the copies
as duplicates, and the audit compares every terminal journal with the ledger.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from shared.clock import ScaledClock, china_datetime, ms_from_china
from shared.errors import message
from shared.money import format_fen
from simulator.cluster import Cluster
from simulator.world import demo_world
from terminal.authorize import TapRequest


@dataclass
class DemoOptions:
    diners: int = 50
    rush_s: float = 20.0
    speed: float = 30.0
    seed: int = 7
    broker: str = "embedded"
    start: str = "2026-11-26T11:40"


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    logging.getLogger("shared.mqtt").setLevel(logging.ERROR)
    rng = random.Random(opts.seed)
    clock = ScaledClock(ms_from_china(opts.start), opts.speed)
    t_start = time.monotonic()
    with Cluster(broker=opts.broker, clock=clock) as cluster:
        conn = cluster.db()
        world = demo_world(conn, clock.now_ms(), diners=opts.diners, seed=opts.seed)
        conn.close()
        terminals = [cluster.add_terminal("C01"), cluster.add_terminal("C01"), cluster.add_terminal("C02")]
        by_canteen = {"C01": terminals[:2], "C02": terminals[2:]}
        if not cluster.wait_synced(30):
            raise RuntimeError("terminals did not sync with the server")
        victim = terminals[1]

        # the lunch rush: every diner eats once somewhere; some buy something; some try twice
        events: list[tuple[float, Any, TapRequest]] = []
        for d in world.diners:
            home = [c for c, info in world.canteens.items() if info["unit_id"] == d.unit_id]
            canteen = home[0] if home and rng.random() < 0.7 else rng.choice(["C01", "C01", "C02"])
            term = by_canteen[canteen][0] if canteen == "C02" else rng.choices(by_canteen["C01"], [0.35, 0.65])[0]
            t = rng.uniform(0.05, 0.8) * opts.rush_s
            events.append((t, term, TapRequest(d.card_id)))
            if rng.random() < 0.3:
                events.append((t + 0.3, term, TapRequest(d.card_id, kind="shop", items=(("tissue", rng.randint(1, 2)),))))
            if rng.random() < 0.1:
                events.append((t + 0.6, term, TapRequest(d.card_id)))  # a second lunch: refused
        events.sort(key=lambda e: e[0])
        faults = [(0.15 * opts.rush_s, "oneway"), (0.3 * opts.rush_s, "cut"), (0.8 * opts.rush_s, "heal")]
        outage: dict[str, int] = {}
        offline_sales = 0
        per_terminal = {t.id: {"approved": 0, "offline": 0} for t in terminals}
        declines: Counter[str] = Counter()
        rush_t0 = time.monotonic()

        def fault(at: float, action: str) -> None:
            time.sleep(max(0.0, rush_t0 + at - time.monotonic()))
            {"oneway": victim.mqtt_proxy.oneway, "cut": victim.cut, "heal": victim.heal}[action]()
            outage[action] = clock.now_ms()

        for t, term, req in events:
            while faults and faults[0][0] <= t:
                fault(*faults.pop(0))
            time.sleep(max(0.0, rush_t0 + t - time.monotonic()))
            decision, sale = term.terminal.tap(req)
            if sale is not None:
                per_terminal[term.id]["approved"] += 1
                per_terminal[term.id]["offline"] += int(sale.offline)
            if sale is not None and sale.offline:
                offline_sales += 1
            if not decision.approved:
                declines[decision.reason or "?"] += 1
        for f in faults:
            fault(*f)

        drained = cluster.drain(90)
        audit = cluster.audit()
        conn = cluster.db()
        per_canteen = [
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT c.name, count(s.uuid), coalesce(sum(s.amount_fen), 0) FROM canteens c "
                "LEFT JOIN sales s ON s.canteen_id = c.id AND s.status = 'applied' GROUP BY c.id ORDER BY c.id"
            )
        ]
        matrix = [
            (r[0], r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT u.name, c.name, count(*), sum(s.amount_fen) FROM sales s "
                "JOIN units u ON u.id = s.unit_id JOIN canteens c ON c.id = s.canteen_id "
                "WHERE s.status = 'applied' AND s.kind = 'meal' GROUP BY u.id, c.id ORDER BY u.id, c.id"
            )
        ]
        conn.close()
        result = {
            **{k: v for k, v in audit.to_json().items() if k != "mismatch_details"},
            "drained": drained,
            "broker": cluster.broker.kind if cluster.broker else "?",
            "terminals": len(terminals),
            "diners": len(world.diners),
            "offline_sales": offline_sales,
            "per_terminal": per_terminal,
            "outage_terminal": victim.id,
            "outage": {k: china_datetime(v).strftime("%H:%M") for k, v in outage.items()},
            "declines": dict(declines),
            "per_canteen": [{"canteen": n, "sales": c, "amount_fen": a} for n, c, a in per_canteen],
            "cross_unit": [{"unit": u, "canteen": c, "meals": n, "amount_fen": a} for u, c, n, a in matrix],
            "mismatch_details": audit.mismatch_details[:20],
        }
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return result


def render(result: dict[str, Any]) -> str:
    ok = result["applied"] == result["approved"] and result["pending"] == 0 and result["ledger_sum_fen"] == 0 and result["mismatches"] == 0
    lines = [
        "食堂一卡通 演示 · Canteen one-card demo",
        f"  终端 terminals {result['terminals']} · 就餐人员 diners {result['diners']} · 消息代理 broker: {result['broker']}",
        f"  断网 outage: {result['outage_terminal']} 回程中断 acks lost {result['outage'].get('oneway', '-')}, "
        f"全断 cut {result['outage'].get('cut', '-')}, 恢复 back {result['outage'].get('heal', '-')} "
        f"(离线交易 offline sales: {result['offline_sales']})",
        "",
        f"  终端批准 approved        {result['approved']:>6}",
        f"  服务器入账 applied       {result['applied']:>6}",
        f"  待上传 pending           {result['pending']:>6}",
        f"  重复已忽略 duplicates    {result['duplicates_ignored']:>6}",
        f"  账本合计 ledger sum      {result['ledger_sum_fen']:>6} fen",
        f"  不一致 mismatches        {result['mismatches']:>6}",
        "",
        "  拒绝 declines: " + (", ".join(f"{message(k)} ({k}) ×{v}" for k, v in sorted(result["declines"].items())) or "-"),
        "  各食堂 per canteen:",
    ]
    for row in result["per_canteen"]:
        lines.append(f"    {row['canteen']:<8} {row['sales']:>4} 笔  {format_fen(row['amount_fen']):>10}")
    lines.append("  跨单位就餐 cross-unit meals (就餐人单位 → 食堂):")
    for row in result["cross_unit"]:
        lines.append(f"    {row['unit']} → {row['canteen']}: {row['meals']} 餐 {format_fen(row['amount_fen'])}")
    lines.append("")
    lines.append(f"  {'✔ 全部一致 all consistent' if ok else '✘ 不一致 INCONSISTENT'} · {result['elapsed_s']} s")
    return "\n".join(lines)
