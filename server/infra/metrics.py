"""The server's Prometheus metrics, one set per application (``app.extensions``).

Served at ``/metrics`` (:mod:`server.api.metrics`); names as in ``deploy/grafana/``:

* ``canteen_sales_ingested_total{result}`` — sales answered by the ingest worker:
  ``applied``, ``duplicate``, ``rejected``, ``quarantined``;
* ``canteen_sales_quarantined_total{reason}`` — held for an admin's review, by reason;
* ``canteen_messages_refused_total{reason}`` — upstream messages refused as a whole;
* ``canteen_ingest_latency_seconds`` — from a message's arrival at the server to its ack;
* ``canteen_acks_published_total``, ``canteen_deltas_published_total``;
* ``canteen_http_requests_total{route,method,status}`` and
  ``canteen_http_request_duration_seconds{route}``;
* ``canteen_terminals{status}`` and ``canteen_terminals_online`` — read from the fleet view
  at each scrape (a collector the app registers).
"""

from __future__ import annotations

from shared.metrics import Collector, CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sales = Counter(
            "canteen_sales_ingested", "Sales answered by the ingest worker", ["result"], registry=r
        )
        self.quarantined = Counter(
            "canteen_sales_quarantined", "Sales held for review, by reason", ["reason"], registry=r
        )
        self.refused = Counter(
            "canteen_messages_refused", "Upstream messages refused as a whole", ["reason"], registry=r
        )
        self.ingest_latency = Histogram(
            "canteen_ingest_latency_seconds",
            "From a message's arrival at the server to its acknowledgement",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.acks = Counter("canteen_acks_published", "Acknowledgements published to terminals", registry=r)
        self.deltas = Counter("canteen_deltas_published", "Downstream deltas published", registry=r)
        self.http = Counter(
            "canteen_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "canteen_http_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for result in ("applied", "duplicate", "rejected", "quarantined"):
            self.sales.labels(result)  # present (at 0) before the first sale

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)
