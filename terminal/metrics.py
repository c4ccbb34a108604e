"""The terminal's Prometheus exporter (``canteen-terminal run --metrics-port N``).

Counted from the terminal's own events: ``canteen_terminal_taps_total{result}`` (approved,
declined), ``canteen_terminal_sales_total{mode}`` (online, offline) and
``canteen_terminal_declines_total{reason}``. Read from the sync agent at each scrape:
``canteen_terminal_unsent_sales``, ``canteen_terminal_oldest_unsent_age_seconds``,
``canteen_terminal_sync_lag_seconds`` (since the cache was last known current),
``canteen_terminal_online``, ``canteen_terminal_clock_offset_seconds``,
``canteen_terminal_sales_acked_total``, ``canteen_terminal_key_rotations_total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.metrics import (
    Collector,
    CollectorRegistry,
    Counter,
    CounterMetricFamily,
    GaugeMetricFamily,
    serve,
)
from terminal.agent import Terminal


class TerminalMetrics:
    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        r = self.registry = CollectorRegistry()
        self.taps = Counter("canteen_terminal_taps", "Taps decided, by result", ["result"], registry=r)
        self.sales = Counter(
            "canteen_terminal_sales", "Approved sales, online or offline", ["mode"], registry=r
        )
        self.declines = Counter(
            "canteen_terminal_declines", "Declined taps, by reason", ["reason"], registry=r
        )
        for result in ("approved", "declined"):
            self.taps.labels(result)
        for mode in ("online", "offline"):
            self.sales.labels(mode)
        r.register(_SyncCollector(terminal))
        self._server: Any = None

    def observe(self, event: dict[str, Any]) -> None:
        """The terminal's ``on_event``: count what happened."""
        kind = event.get("event")
        if kind == "approved":
            self.taps.labels("approved").inc()
            self.sales.labels("offline" if event.get("offline") else "online").inc()
        elif kind == "declined":
            self.taps.labels("declined").inc()
            self.declines.labels(str(event.get("reason") or "?")).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> TerminalMetrics:
        self._server = serve(self.registry, port, host)
        return self

    @property
    def port(self) -> int | None:
        return int(self._server.server_port) if self._server is not None else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _SyncCollector(Collector):
    def __init__(self, terminal: Terminal) -> None:
        self._t = terminal

    def collect(self) -> Iterator[Any]:
        sync = self._t.sync
        now = self._t.clock.now_ms()
        with self._t._journal_lock:  # the store's connection is the tap path's
            unsent = self._t.store.pending_count()
            oldest = self._t.store.oldest_pending_ms()
        yield GaugeMetricFamily("canteen_terminal_unsent_sales", "Sales not yet acknowledged", value=unsent)
        yield GaugeMetricFamily(
            "canteen_terminal_oldest_unsent_age_seconds",
            "Age of the oldest unsent sale (0: none)",
            value=max(now - oldest, 0) / 1000 if oldest is not None and unsent else 0,
        )
        lag = 0.0 if sync.in_sync else (max(now - sync.last_sync_ms, 0) / 1000 if sync.last_sync_ms else -1.0)
        yield GaugeMetricFamily(
            "canteen_terminal_sync_lag_seconds",
            "Since the cache was last known current (0 while in sync; -1: never synced)",
            value=lag,
        )
        yield GaugeMetricFamily(
            "canteen_terminal_online", "1 while in sync with the server", value=int(sync.in_sync)
        )
        if sync.clock_offset_ms is not None:
            yield GaugeMetricFamily(
                "canteen_terminal_clock_offset_seconds",
                "Server minus terminal clock",
                value=sync.clock_offset_ms / 1000,
            )
        # counters in Prometheus terms, read from the agent's own counts
        yield CounterMetricFamily(
            "canteen_terminal_sales_acked", "Sales the server acknowledged as applied", value=sync.stats.acked
        )
        yield CounterMetricFamily(
            "canteen_terminal_key_rotations", "Keys installed by this process", value=sync.rotations
        )
