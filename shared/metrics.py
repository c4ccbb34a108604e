"""The one module that imports ``prometheus_client``: metric types, exposition, parsing.

Server and terminal build their metrics from these names, each in its own
:class:`CollectorRegistry` (never the library's global one: tests run many servers and
terminals in one process). :func:`exposition` renders a registry in Prometheus' text
format for an HTTP handler; :func:`serve` starts the library's small HTTP exporter on a
port (the terminal's); :func:`parse` reads the text format back (tests, tools).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "Collector",
    "CollectorRegistry",
    "Counter",
    "CounterMetricFamily",
    "Gauge",
    "GaugeMetricFamily",
    "Histogram",
    "exposition",
    "parse",
    "serve",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(registry)


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> Any:  # noqa: ANN401 — the library's server
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread; returns the
    server (``shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def parse(text: str) -> Iterator[Any]:
    """Metric families from the text format (name, type, samples)."""
    return text_string_to_metric_families(text)
