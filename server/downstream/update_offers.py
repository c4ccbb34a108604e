"""Which update each terminal is offered, and publishing it (signed, retained).

An offer (``update_offers``, made by ``canteen-server update-offer``) names a bundle and
either one canteen's terminals or the whole fleet, at a stage: ``stage_pct`` percent of
those terminals, chosen by :func:`in_stage` — a hash of the bundle and the terminal id, so
the choice is the same every time it is computed, each release picks its own first
terminals, and widening a stage (5 % → 25 % → 100 %) keeps every terminal already chosen.
A terminal is offered, per kind, the newest version of the offers that choose it.

:class:`OfferPublisher` publishes each terminal's offers as one
:class:`~shared.protocol.UpdateOffer` (Ed25519-signed like every downstream message,
retained on ``canteen/v1/t/<id>/down/update``) when they change, and all of them again every
``republish_s`` and at start (a broker without persistence forgets retained messages).
An empty list withdraws an offer.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Callable

from server.downstream.polling import PollingPublisher, Publish
from shared.clock import Clock
from shared.protocol import OfferedBundle, ServerKey, UpdateOffer, topics
from shared.release import version_key

log = logging.getLogger(__name__)


def stage_point(terminal_id: str, kind: str, version: str) -> int:
    """Where a terminal falls for a release, 0–9999: chosen at a stage of p % when below p × 100."""
    digest = hashlib.sha256(f"{kind}/{version}/{terminal_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def in_stage(terminal_id: str, kind: str, version: str, stage_pct: int) -> bool:
    return stage_point(terminal_id, kind, version) < stage_pct * 100


def offers_by_terminal(conn: sqlite3.Connection) -> dict[str, UpdateOffer]:
    """Every terminal in service and what it is offered now (possibly nothing)."""
    terminals = conn.execute(
        "SELECT id, canteen_id FROM terminals WHERE state <> 'revoked' ORDER BY id"
    ).fetchall()
    offers = conn.execute(
        "SELECT o.kind, o.version, o.canteen_id, o.stage_pct, b.sha256, b.size "
        "FROM update_offers o JOIN update_bundles b ON b.kind = o.kind AND b.version = o.version "
        "WHERE o.withdrawn_at_ms IS NULL"
    ).fetchall()
    out: dict[str, UpdateOffer] = {}
    for terminal_id, canteen_id in terminals:
        best: dict[str, OfferedBundle] = {}
        for kind, version, for_canteen, pct, sha, size in offers:
            if for_canteen is not None and for_canteen != canteen_id:
                continue
            if not in_stage(terminal_id, kind, version, pct):
                continue
            if kind not in best or version_key(version) > version_key(best[kind].version):
                best[kind] = OfferedBundle(kind, version, sha, size)
        out[terminal_id] = UpdateOffer(terminal_id, tuple(best[k] for k in sorted(best)))
    return out


class OfferPublisher(PollingPublisher):
    """Publishes each terminal's offers when they change (polling the table, so an offer
    made by the CLI in another process goes out too), and all again every ``republish_s``."""

    _log = log
    _what = "update offers"

    def __init__(
        self,
        conn: sqlite3.Connection,
        key: ServerKey,
        publish: Publish,
        clock: Clock,
        *,
        poll_s: float = 1.0,
        republish_s: float = 300.0,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self._republish_s = republish_s
        self._mono = monotonic or time.monotonic
        self._sent: dict[str, UpdateOffer] = {}
        self._last_full = float("-inf")
        super().__init__(conn, key, publish, clock, thread_name="update-offers", poll_s=poll_s)

    def _round(self) -> None:
        self.publish_changes()

    def publish_changes(self) -> int:
        """Publish what changed since the last time (everything when it is time); returns
        how many terminals were sent their offers."""
        full = self._mono() - self._last_full >= self._republish_s
        sent = 0
        failed = False
        for terminal_id, offer in offers_by_terminal(self._conn).items():
            if not full and self._sent.get(terminal_id) == offer:
                continue
            if not self._send_retained(topics.update_offer(terminal_id), "update_offer", offer.to_body()):
                failed = True  # the broker is away: try again on the next poll
                break
            if self._sent.get(terminal_id) != offer and offer.offers:
                log.info(
                    "update offer to %s: %s",
                    terminal_id,
                    ", ".join(f"{o.kind} {o.version}" for o in offer.offers),
                )
            self._sent[terminal_id] = offer
            sent += 1
        if full and not failed:
            self._last_full = self._mono()
        return sent
