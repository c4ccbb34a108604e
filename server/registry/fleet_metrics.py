"""The fleet in Prometheus terms, read from the database at each scrape:
``canteen_terminals{status}`` (online, offline, revoked) and ``canteen_terminals_online``,
plus per terminal ``canteen_terminal_unsent_sales`` and ``canteen_terminal_clock_offset_seconds``
as last reported."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from server.infra.db import open_db
from server.registry.fleet import health
from server.registry.fleet_rules import FleetLimits, online_now
from shared.metrics import Collector, GaugeMetricFamily


class FleetCollector(Collector):
    def __init__(self, database: str, limits: FleetLimits, now_ms: Callable[[], int]) -> None:
        self._database = database
        self._limits = limits
        self._now_ms = now_ms

    def collect(self) -> Iterator[Any]:
        try:
            conn = open_db(self._database)
        except sqlite3.Error:
            return
        try:
            fleet = health(conn)
        finally:
            conn.close()
        now = self._now_ms()
        counts = {"online": 0, "offline": 0, "revoked": 0}
        unsent = GaugeMetricFamily(
            "canteen_terminal_unsent_sales",
            "Unsent sales a terminal last reported",
            labels=["terminal", "canteen"],
        )
        offset = GaugeMetricFamily(
            "canteen_terminal_clock_offset_seconds",
            "Server minus terminal clock, as last measured by the terminal",
            labels=["terminal", "canteen"],
        )
        for t in fleet:
            status = (
                "revoked"
                if t.state == "revoked"
                else ("online" if online_now(t, now, self._limits) else "offline")
            )
            counts[status] += 1
            if t.state == "revoked":
                continue
            if t.unsent_sales is not None:
                unsent.add_metric([t.terminal_id, t.canteen_id], t.unsent_sales)
            if t.clock_offset_ms is not None:
                offset.add_metric([t.terminal_id, t.canteen_id], t.clock_offset_ms / 1000)
        by_status = GaugeMetricFamily("canteen_terminals", "Terminals by status", labels=["status"])
        for status, n in counts.items():
            by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily("canteen_terminals_online", "Terminals online now", value=counts["online"])
        yield unsent
        yield offset
