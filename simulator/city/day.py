"""One working day of the city: who eats where, when, and how they pay. Pure.

:func:`day_visits` turns the city plan and a date into the day's visits, in time order:

* breakfast (35 % of staff), lunch (90 %) and dinner (15 %, where served) — breakfast and
  dinner at the diner's usual canteen, lunch there 80 % of the time and otherwise at another
  unit's canteen (外出办事: the cross-unit visits the policy is about); the lunch rush peaks
  at 12:00;
* a shop purchase after lunch (8 %), a second lunch attempt at the same counter (1 %, to be
  refused), and self top-ups from the bank (1 %, during the day);
* each diner pays the way they like (the phone's QR code, face) four times in five, else by
  card; the counter (terminal) is picked at random among the canteen's.

Meal times are the import's defaults (07:00–09:00, 11:30–13:30, 17:30–19:30). Visits carry
whole simulated minutes; the driver runs one minute at a time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from shared.clock import CHINA_TZ
from simulator.city.world import ITEMS, CityPlan, DinerPlan

MEAL_WINDOWS = {
    "breakfast": (7 * 60, 9 * 60),
    "lunch": (11 * 60 + 30, 13 * 60 + 30),
    "dinner": (17 * 60 + 30, 19 * 60 + 30),
}
TOPUP_YUAN = (50, 100, 200)


@dataclass(frozen=True)
class Visit:
    at_ms: int
    card: str
    canteen: str  # canteen name ("" for a top-up)
    till: int  # 0-based counter index at that canteen
    kind: str  # meal | shop | topup
    method: str  # card | qr | face (bank for a top-up)
    items: tuple[tuple[str, int], ...] = ()
    amount_fen: int = 0  # a top-up's amount
    period: str | None = None  # the meal period the diner came for


def working_days(last: date, count: int) -> list[date]:
    """``count`` working days (Monday–Friday) ending on ``last`` (or the working day before it)."""
    days: list[date] = []
    d = last
    while len(days) < count:
        if d.weekday() < 5:
            days.append(d)
        d -= timedelta(days=1)
    return sorted(days)


def minute_ms(day: date, minute: int) -> int:
    dt = datetime(day.year, day.month, day.day, tzinfo=CHINA_TZ) + timedelta(minutes=minute)
    return int(dt.timestamp() * 1000)


def day_visits(plan: CityPlan, day: date, tills: int, rng: random.Random) -> list[Visit]:
    """The day's visits, sorted by time (see the module docstring)."""
    canteens = {c.name: c for c in plan.canteens}
    names = list(canteens)
    visits: list[Visit] = []

    def method(d: DinerPlan) -> str:
        return d.pays if d.pays != "card" and rng.random() < 0.8 else "card"

    def meal(d: DinerPlan, where: str, period: str, minute: int) -> Visit:
        return Visit(
            minute_ms(day, minute), d.card, where, rng.randrange(tills), "meal", method(d), period=period
        )

    for d in plan.diners:
        home = canteens[d.home]
        if rng.random() < 0.35:
            visits.append(meal(d, home.name, "breakfast", rng.randrange(*MEAL_WINDOWS["breakfast"])))
        if rng.random() < 0.9:
            where = (
                home.name
                if rng.random() < 0.8 or len(names) == 1
                else rng.choice([n for n in names if n != home.name])
            )
            start, end = MEAL_WINDOWS["lunch"]
            minute = min(end - 1, int(rng.triangular(start, end, 12 * 60)))
            lunch = meal(d, where, "lunch", minute)
            visits.append(lunch)
            if rng.random() < 0.01:  # tries a second lunch at the same counter: refused
                visits.append(
                    Visit(lunch.at_ms + 3 * 60_000, d.card, where, lunch.till, "meal", "card", period="lunch")
                )
            if rng.random() < 0.08:
                basket = tuple((sku, rng.randint(1, 2)) for sku, *_ in rng.sample(ITEMS, rng.randint(1, 2)))
                visits.append(
                    Visit(
                        lunch.at_ms + 10 * 60_000,
                        d.card,
                        where,
                        rng.randrange(tills),
                        "shop",
                        method(d),
                        basket,
                    )
                )
        if home.dinner and rng.random() < 0.15:
            visits.append(meal(d, home.name, "dinner", rng.randrange(*MEAL_WINDOWS["dinner"])))
        if rng.random() < 0.01:
            visits.append(
                Visit(
                    minute_ms(day, rng.randrange(8 * 60, 18 * 60)),
                    d.card,
                    "",
                    0,
                    "topup",
                    "bank",
                    amount_fen=rng.choice(TOPUP_YUAN) * 100,
                )
            )
    visits.sort(key=lambda v: (v.at_ms, v.card))
    return visits
