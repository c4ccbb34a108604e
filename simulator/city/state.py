"""The running city: what :mod:`simulator.city.run` builds and plays, and what
:mod:`simulator.city.render` reads back.

:class:`CityState` holds the plan, the harness and the shared clock, the server's ids of
the units and canteens, each unit's clerk and each QR user's phone (API sessions), the tills
of every canteen, the counters' answers (``outcomes``, one dict per visit) and the
:class:`~simulator.city.clock.Moment` that QR payments hold the clock still with. It lives
here, apart from both, so the runner and the renderer share the type without importing
each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.clock import FakeClock
from simulator.city.clock import Moment
from simulator.city.world import CityPlan
from simulator.harness.driver import Api, Harness, Till


@dataclass
class CityState:
    plan: CityPlan
    harness: Harness
    clock: FakeClock
    canteen_ids: dict[str, str] = field(default_factory=dict)
    unit_ids: dict[str, str] = field(default_factory=dict)
    clerks: dict[str, Api] = field(default_factory=dict)
    phones: dict[str, Api] = field(default_factory=dict)  # card -> the diner's phone (QR users)
    tills: dict[str, list[Till]] = field(default_factory=dict)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    moment: Moment = field(default_factory=Moment)
