"""``city.day_s``: one working day of the full simulated city, and its sales rate.

``canteen-sim city`` at the issue's size — 40 units, 5,000 diners, 15 canteens with two
terminals each (30 real terminals with simulated readers, scanners and cameras) — on the
run's broker (``ctx.broker``: Mosquitto when installed). Timed: the day (breakfast, the
lunch rush with cross-unit visits, shop, top-ups, dinner, the outage at one terminal, the
evening drain). Not timed: building the city and the closes, reported as parameters.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.run import Context, Result
from simulator.city.render import consistent
from simulator.city.run import CityOptions, run_city


def city_day(ctx: Context, units: int = 40, diners: int = 5000, canteens: int = 15) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-city-"))
    try:
        result = run_city(
            CityOptions(
                units=units,
                diners=diners,
                canteens=canteens,
                days=1,
                broker=ctx.broker,
                workdir=workdir,
                terminal_prefix=f"bcity{time.time_ns() % 10**8}",
            )
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert consistent(result), "the city run lost or doubled a sale"
    day = result["days"][0]
    params = {
        "units": units,
        "diners": diners,
        "canteens": canteens,
        "terminals": result["city"]["terminals"],
        "sales": result["approved"],
        "broker": ctx.broker.kind,
        "setup_s": result["timings"]["setup_s"],
    }
    return [
        Result("city.day_s", day["elapsed_s"], "s", params, target="< 120 s"),
        Result("city.sales_per_s", round(result["approved"] / day["elapsed_s"], 1), "sales/s", params),
    ]


BENCHMARKS = [city_day]
