"""``canteen-sim city``: a whole city's canteens for some working days, then the closes.

:func:`run_city` builds the city of :mod:`simulator.city.world` in a real server, the way
its clerks would — units over the API, the seed's attachment table and the shop items as
CSV imports, the staff roster as a CSV import, the quarter's allocation by each unit's
clerk, some self top-ups from the bank, QR pay opened on the diners' phones, faces enrolled
from photos — and starts ``terminals`` real terminals per canteen with simulated readers,
scanners and cameras (:mod:`simulator.harness.driver`). Then, day by day
(:mod:`simulator.city.day`), it runs breakfast, the lunch rush with its cross-unit visits,
shop sales, top-ups and dinner one simulated minute at a time (:mod:`simulator.city.clock`),
every counter serving its queue on its own thread. On the first day one counter of the
busiest canteen loses its return path at 11:50 (sales arrive, acknowledgements do not), its
whole line at 12:00, and is back at 12:40: it serves offline meanwhile and resends. A quarter
that ends during the run is scored and settled on the next morning and the new one
allocated. After the last day each unit scores its canteen, the quarter is settled and the
year cleared (``YEAR_END_REFUND_TO=unit``), and the result is read back through
the API (statements, clearing, the cross-unit dining matrix, the ledger check) with the
cluster's audit of every terminal journal against the server.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from server.books.periods import Quarter, year_cutoff_ms
from shared.broker import Broker
from shared.clock import FakeClock
from simulator.city.clock import DayClock
from simulator.city.day import Visit, day_visits, minute_ms, working_days
from simulator.city.faces import LabelFaceEngine, photo_png
from simulator.city.render import collect
from simulator.city.state import CityState
from simulator.city.world import canteen_table_csv, items_csv, plan_city, roster_csv
from simulator.harness.cluster import Cluster
from simulator.harness.driver import Harness, Till
from terminal.devices import Order

log = logging.getLogger(__name__)
# the first day's outage at one counter of the busiest canteen: first the return path goes
# (sales reach the server, acknowledgements do not), then the whole line, then it is back
OUTAGE = ((11 * 60 + 50, "oneway"), (12 * 60, "cut"), (12 * 60 + 40, "heal"))


@dataclass
class CityOptions:
    units: int = 40
    diners: int = 5000
    canteens: int = 15
    days: int = 1
    terminals: int = 2  # per canteen
    seed: int = 7
    last_day: str = "2026-12-31"
    outage: bool = True
    broker: str | Broker = "embedded"
    workdir: str | Path | None = None
    terminal_prefix: str | None = None


def run_city(opts: CityOptions) -> dict[str, Any]:
    """Build the city, run its days and closes; the summary (see :mod:`simulator.city.render`)."""
    t0 = time.monotonic()
    logging.getLogger("shared.mqtt").setLevel(logging.ERROR)
    logging.getLogger("terminal.sync").setLevel(logging.ERROR)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" under a rush
    plan = plan_city(opts.units, opts.diners, opts.canteens, opts.seed)
    days = working_days(date.fromisoformat(opts.last_day), opts.days)
    first_q = Quarter.of_ms(minute_ms(days[0], 12 * 60))
    setup_ms = min(first_q.start_ms + 4 * 86_400_000 + 9 * 3_600_000, minute_ms(days[0], 6 * 60))
    clock = FakeClock(setup_ms)
    rng = random.Random(opts.seed)
    timings: dict[str, float] = {}
    with Cluster(
        opts.workdir,
        broker=opts.broker,
        clock=clock,
        terminal_prefix=opts.terminal_prefix,
        server_config={"YEAR_END_REFUND_TO": "unit"},
    ) as cluster:
        assert cluster.server is not None
        cluster.server.app.extensions["canteen_face_engine"] = (
            LabelFaceEngine()
        )  # the server's (simulated) face engine
        harness = Harness(cluster)
        city = CityState(plan, harness, clock)
        try:
            _build(city, opts, first_q, rng)
            timings["setup_s"] = round(time.monotonic() - t0, 1)
            per_day: list[dict[str, Any]] = []
            quarter = first_q
            for n, day in enumerate(days):
                t = time.monotonic()
                q = Quarter.of_ms(minute_ms(day, 12 * 60))
                if q != quarter:  # a new quarter during the run: close the old one, fund the new
                    clock.set_ms(minute_ms(day, 6 * 60))
                    _close_quarter(city, quarter, rng)
                    _allocate(city, q)
                    quarter = q
                outage = _run_day(city, day, opts, rng, with_outage=opts.outage and n == 0)
                per_day.append(
                    {"date": day.isoformat(), "elapsed_s": round(time.monotonic() - t, 1), **outage}
                )
            t = time.monotonic()
            harness.settle_down(120)
            _close_quarter(city, quarter, rng)
            cutoff = year_cutoff_ms(days[-1].year)
            clock.set_ms(max(clock.now_ms(), cutoff + 40 * 60_000))
            harness.wait_watermarks(cutoff)
            clearing = harness.admin.post(f"/api/v1/clearings/{days[-1].year}", {})
            timings["closing_s"] = round(time.monotonic() - t, 1)
            result = collect(city, days, per_day, clearing)
        finally:
            harness.close()
    timings["total_s"] = round(time.monotonic() - t0, 1)
    result["timings"] = timings
    return result


# --- setup --------------------------------------------------------------------------------


def _build(city: CityState, opts: CityOptions, quarter: Quarter, rng: random.Random) -> None:
    h, plan = city.harness, city.plan
    admin = h.admin
    for u in plan.units:
        unit = admin.post("/api/v1/units", {"name": u.name, "quarterly_standard_fen": u.standard_yuan * 100})
        city.unit_ids[u.name] = unit["id"]
        city.clerks[u.name] = h.token("clerk", unit_id=unit["id"])
    admin.call(
        "POST", "/api/v1/canteens/import", data=canteen_table_csv(plan).encode(), content_type="text/csv"
    )
    city.canteen_ids = {c["name"]: c["id"] for c in admin.get("/api/v1/canteens")}
    admin.call(
        "POST", "/api/v1/canteens/items/import", data=items_csv(plan).encode(), content_type="text/csv"
    )
    for c in plan.canteens:
        admin.put(
            f"/api/v1/canteens/{city.canteen_ids[c.name]}/quality-bands",
            {"bands": [list(b) for b in c.quality_bands]},
        )
    admin.call("POST", "/api/v1/roster/import", data=roster_csv(plan).encode(), content_type="text/csv")
    holders: dict[str, str] = {}
    for u in plan.units:
        for holder in city.clerks[u.name].get(f"/api/v1/units/{city.unit_ids[u.name]}/holders"):
            for card in holder["cards"]:
                holders[card["card_id"]] = holder["id"]
    _allocate(city, quarter)
    for d in plan.diners:
        if rng.random() < 0.2:  # some staff keep their own money on the card too
            admin.post(
                "/api/v1/topups",
                {
                    "card_id": d.card,
                    "amount_fen": rng.choice((5000, 10000, 20000)),
                    "ref": f"city-open-{d.card}",
                },
            )
        if d.pays == "qr":  # QR pay opened on the phone
            phone = h.token("diner", holder_id=holders[d.card])
            phone.post("/api/v1/qr/credentials", {"card_id": d.card})
            city.phones[d.card] = phone
        elif d.pays == "face":  # enrolled from a photo at the unit's office
            city.clerks[d.unit].call(
                "POST",
                f"/api/v1/holders/{holders[d.card]}/faces",
                data=photo_png(d.card),
                content_type="image/png",
            )
    engine = LabelFaceEngine()
    for c in plan.canteens:
        city.tills[c.name] = [
            h.add_till(city.canteen_ids[c.name], c.name, face_engine=engine, heartbeat_s=1.0)
            for _ in range(opts.terminals)
        ]
    h.settle_down(300)


def _allocate(city: CityState, quarter: Quarter) -> None:
    for u in city.plan.units:
        city.clerks[u.name].post(
            "/api/v1/allocations", {"unit_id": city.unit_ids[u.name], "quarter": str(quarter)}
        )


def _close_quarter(city: CityState, quarter: Quarter, rng: random.Random) -> None:
    """Each unit scores its canteen's operator; at the quarter's end it is settled."""
    for c in city.plan.canteens:
        city.clerks[c.unit].put(
            f"/api/v1/canteens/{city.canteen_ids[c.name]}/quality-scores/{quarter}",
            {"score": rng.randint(76, 98)},
        )
    city.clock.set_ms(max(city.clock.now_ms(), quarter.end_ms + 30 * 60_000))
    city.harness.wait_watermarks(quarter.end_ms)
    city.harness.admin.post(f"/api/v1/settlements/{quarter}", {})


# --- a day --------------------------------------------------------------------------------


def _run_day(
    city: CityState, day: date, opts: CityOptions, rng: random.Random, *, with_outage: bool
) -> dict[str, Any]:
    h = city.harness
    visits = day_visits(city.plan, day, opts.terminals, rng)
    victim = None
    if with_outage:
        busiest = Counter(v.canteen for v in visits if v.kind != "topup").most_common(1)[0][0]
        victim = city.tills[busiest][0]
    faults = [(minute_ms(day, m), action) for m, action in OUTAGE] if victim is not None else []
    pools = {
        t.id: ThreadPoolExecutor(1, thread_name_prefix=f"counter-{t.id}")
        for ts in city.tills.values()
        for t in ts
    }
    day_clock = DayClock(city.clock, h, city.moment)

    def fault(at_ms: int, action: str) -> None:
        assert victim is not None
        day_clock.advance(at_ms, wait_all=True)
        {"oneway": h.oneway, "cut": h.cut, "heal": h.heal}[action](victim)

    try:
        i = 0
        while i < len(visits):
            now = visits[i].at_ms
            while faults and faults[0][0] <= now:
                fault(*faults.pop(0))
            day_clock.advance(now)
            futures: list[Future[None]] = []
            while i < len(visits) and visits[i].at_ms == now:
                v = visits[i]
                if v.kind == "topup":
                    h.admin.post(
                        "/api/v1/topups",
                        {"card_id": v.card, "amount_fen": v.amount_fen, "ref": f"city-{day}-{i}"},
                    )
                else:
                    till = city.tills[v.canteen][v.till]
                    futures.append(pools[till.id].submit(_serve, city, till, v))
                i += 1
            day_clock.add(now, futures)
        for f in faults:
            fault(*f)
        day_clock.advance(minute_ms(day, 20 * 60), wait_all=True)
        h.settle_down(300)
    finally:
        for p in pools.values():
            p.shutdown()
    outage = None
    if victim is not None:
        outage = {
            "terminal": victim.id,
            "canteen": victim.canteen_name,
            **{action: f"{m // 60:02d}:{m % 60:02d}" for m, action in OUTAGE},
        }
    return {"outage": outage, "topups": sum(1 for v in visits if v.kind == "topup")}


def _serve(city: CityState, till: Till, v: Visit) -> None:
    """One diner at one counter: card on the reader, phone code at the scanner, or face."""
    order = Order("meal") if v.kind == "meal" else Order("shop", v.items)
    if v.method == "qr":
        with city.moment:  # a code is good for a minute: the clock waits while it is fetched and shown
            answer = till.show_code(city.phones[v.card].get("/api/v1/qr/my-code")["code"], order)
    elif v.method == "face":
        answer = till.show_face(v.card, order)
    else:
        answer = till.present_card(v.card, order)
    city.outcomes.append(
        {
            "at_ms": v.at_ms,
            "card": v.card,
            "canteen": v.canteen,
            "kind": v.kind,
            "period": v.period,
            "method": v.method,
            "approved": answer["event"] == "approved",
            "reason": answer.get("reason"),
            "offline": bool(answer.get("offline")),
            "amount_fen": answer.get("amount_fen", 0),
        }
    )
