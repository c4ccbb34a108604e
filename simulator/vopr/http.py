"""The terminals' HTTP calls in the simulation, answered by the server's real Flask app.

:func:`sender` makes a terminal's :data:`terminal.server_http.Send`: the request the real
:class:`~terminal.server_http.ServerHttp` signed goes to the server node's app through its
test client — its authentication, nonce check, snapshot and delta code are the server's
own (the clock probe's ``/api/v1/health`` is answered from the server's clock directly: it
returns nothing else the terminal reads). It fails as the network would: the terminal cut
off, the server down, or a request lost on a lossy link (``ServerUnreachable``, which the
sync agent retries).
"""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import urlsplit

from simulator.vopr.network import SimBroker
from simulator.vopr.prng import Prng
from simulator.vopr.server_node import ServerNode
from terminal.server_http import Send, ServerUnreachable

HEALTH = "/api/v1/health"


def sender(terminal_id: str, server: ServerNode, broker: SimBroker, rng: Prng, stats: Counter[str]) -> Send:
    def send(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout_s: float) -> bytes:
        parts = urlsplit(url)
        link = broker.links.get(terminal_id)
        if not server.up:
            raise ServerUnreachable(f"{method} {parts.path}: connection refused")
        if link is not None and (link.partitioned or (link.faults.loss_p and rng.chance(link.faults.loss_p))):
            stats["http_failed"] += 1
            raise ServerUnreachable(f"{method} {parts.path}: timed out")
        if parts.path == HEALTH:
            # the clock probe, every few minutes per terminal: the health view's now_ms is
            # the server's clock, read here without a trip through the WSGI stack
            return json.dumps({"ok": True, "now_ms": server.clock.now_ms()}).encode()
        resp = server.client.open(
            parts.path, method=method, query_string=parts.query, headers=headers, data=body
        )
        if resp.status_code >= 400:
            raise ServerUnreachable(f"{method} {parts.path}: HTTP {resp.status_code}")
        return resp.get_data()

    return send
