"""Fleet alerts as log lines: a thread in the running server that evaluates the alert
rules every ``interval_s`` and logs each alert once when it starts (WARNING, its stable
code first: ``terminal_offline: T0003 (C0001) offline for 14 min during meal hours``) and
once when it clears (INFO), so a log watcher sees changes rather than a minute-by-minute
repetition. The same alerts are in ``canteen-server fleet`` and ``GET /api/v1/fleet``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from server.registry.fleet import health
from server.registry.fleet_rules import Alert, FleetLimits, fleet_alerts

log = logging.getLogger("canteen.fleet")


class AlertLog:
    """Which alerts are active; :meth:`update` logs those that start and those that end."""

    def __init__(self) -> None:
        self.active: dict[tuple[str, str], Alert] = {}

    def update(self, alerts: list[Alert]) -> tuple[list[Alert], list[Alert]]:
        now = {(a.code, a.terminal_id): a for a in alerts}
        started = [a for k, a in now.items() if k not in self.active]
        ended = [a for k, a in self.active.items() if k not in now]
        for a in started:
            log.warning("%s: %s (%s) %s", a.code, a.terminal_id, a.canteen_id, a.detail)
        for a in ended:
            log.info("%s cleared: %s (%s)", a.code, a.terminal_id, a.canteen_id)
        self.active = now
        return started, ended


class FleetWatch:
    def __init__(
        self,
        conn: sqlite3.Connection,
        now_ms: Callable[[], int],
        limits: FleetLimits,
        interval_s: float = 60.0,
    ) -> None:
        self._conn = conn
        self._now_ms = now_ms
        self.limits = limits
        self.interval_s = interval_s
        self.alerts = AlertLog()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-watch", daemon=True)

    def start(self) -> FleetWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def check(self) -> list[Alert]:
        alerts = fleet_alerts(health(self._conn), self._now_ms(), self.limits)
        self.alerts.update(alerts)
        return alerts

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except sqlite3.Error as exc:
                log.error("fleet watch: database error: %s", exc)
