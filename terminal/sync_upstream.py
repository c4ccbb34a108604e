"""The sync agent's way up: the sales' and the reversals' outboxes sent in signed batches.

Outbox rows go up in batches (``batch_size`` rows, up to ``window`` batches in flight); a
row leaves its outbox only when the server's ack for it arrives (:meth:`Upstream.on_ack`,
:meth:`Upstream.on_reversal_ack`). A
batch not acknowledged within ``ack_timeout_s`` (:meth:`Upstream.expire`), or in flight
when the link dropped (:meth:`Upstream.resend_all`), is simply sent again. Reversals
(:mod:`terminal.reversals`) go after the sales, on their own topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from shared.ids import uuid4_hex
from shared.protocol import Ack, ReversalAck, seal_hmac
from shared.protocol.envelope import sale_batch_body_json, seal_hmac_body_json
from terminal import reversals
from terminal.config import TerminalConfig
from terminal.credentials import Keyring
from terminal.store import Store
from terminal.sync_link import Link, OwnTopics
from terminal.sync_record import SyncRecord
from terminal.sync_stats import SyncStats

# the sync agent's logger: its lines keep the name they had before the agent was split
log = logging.getLogger("terminal.sync")


@dataclass
class InFlight:
    seqs: list[int]
    sent_at: float
    kind: str = "sales"  # or "reversals"


class Upstream:
    """The batches in flight (:attr:`inflight`, by message id), how far each outbox was sent
    in this round (:attr:`cursor`, :attr:`rcursor`), and since when a batch waits for its
    ack (:attr:`awaiting_since`, monotonic; None when nothing waits)."""

    def __init__(
        self,
        config: TerminalConfig,
        store: Store,
        keys: Keyring,
        link: Link,
        own: OwnTopics,
        stats: SyncStats,
        record: SyncRecord,
        now_ms: Callable[[], int],
        monotonic: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.keys = keys
        self.link = link
        self._topics = own
        self.stats = stats
        self.record = record
        self._now_ms = now_ms  # the agent's clock, read when used
        self._mono = monotonic
        self.inflight: dict[str, InFlight] = {}
        self.cursor = 0  # highest seq sent in this round
        self.rcursor = 0  # the same for reversals
        self.awaiting_since: float | None = None  # oldest unanswered batch since the last ack

    def resend_all(self) -> None:
        """A new connection: anything in flight on the old one may be lost, send it all again."""
        if self.inflight:
            self.stats.resends += 1
        self.inflight.clear()
        self.cursor = self.rcursor = 0

    def answered(self, msg_id: str) -> InFlight | None:
        """The server answered ``msg_id``: no longer in flight (what was, if it was)."""
        flight = self.inflight.pop(msg_id, None)
        self.awaiting_since = self._mono() if self.inflight else None  # the server answers
        return flight

    def refused(self, flight: InFlight) -> None:
        """The server refused a whole batch: its rows are sent again from the outbox."""
        if flight.kind == "reversals":
            self.rcursor = min(self.rcursor, min(flight.seqs) - 1)
        else:
            self.cursor = min(self.cursor, min(flight.seqs) - 1)

    def on_ack(self, ack: Ack) -> None:
        """The server's answer to a sale batch: its rows settled (or, refused whole, sent again)."""
        flight = self.answered(ack.in_reply_to)
        if ack.reason is not None:
            self.record.note_error(ack.reason)
            log.error(
                "%s: server refused message %s: %s", self.config.terminal_id, ack.in_reply_to, ack.reason
            )
            if flight is not None:
                self.refused(flight)
            return
        with self.store.joined_txn():  # settled and known current: one commit (or the batch's)
            counts = self.store.apply_results(ack.results, self.config.terminal_id)
            self.record.mark_synced()
        if log.isEnabledFor(logging.INFO):  # its arguments cost more than the check
            log.info(
                "%s: ack for message %s: %s",
                self.config.terminal_id,
                ack.in_reply_to,
                ", ".join(f"{k} {v}" for k, v in counts.items() if v),
                extra={
                    "msg_id": ack.in_reply_to,
                    "sales": {f"{r.terminal_id}/{r.seq}": r.status for r in ack.results},
                },
            )
        self.stats.acked += counts["applied"]
        self.stats.rejected += counts["rejected"]
        self.stats.quarantined += counts["quarantined"]
        for r in ack.results:
            if r.quarantined:
                log.error(
                    "%s: sale %s held by the server for review: %s", self.config.terminal_id, r.seq, r.reason
                )
            elif r.rejected:
                self.stats.reject_reasons[r.reason or "?"] = (
                    self.stats.reject_reasons.get(r.reason or "?", 0) + 1
                )
                self.record.note_error(r.reason or "rejected")
                log.error("%s: sale %s rejected by server: %s", self.config.terminal_id, r.seq, r.reason)

    def on_reversal_ack(self, ack: ReversalAck) -> None:
        """The answer to a reversal batch (or, unasked, waiting reversals now decided)."""
        if ack.in_reply_to in self.inflight:
            self.answered(ack.in_reply_to)
        counts = reversals.apply_results(self.store, ack.results, self.config.terminal_id)
        self.stats.reversals_acked += counts["applied"]
        self.stats.reversals_rejected += counts["rejected"]
        self.stats.reversals_waiting += counts["waiting"]
        for r in ack.results:
            if r.rejected:
                log.error("%s: reversal R%s rejected by server: %s", self.config.terminal_id, r.seq, r.reason)
        self.record.mark_synced()

    def expire(self) -> None:
        now = self._mono()
        expired = [m for m, f in self.inflight.items() if now - f.sent_at > self.config.ack_timeout_s]
        if expired:
            self.stats.resends += len(expired)
            for m in expired:
                del self.inflight[m]
            self.cursor = self.rcursor = 0  # resend everything still in the outboxes, oldest first

    def send(self) -> None:
        """The sales' outbox, then the reversals'."""
        if not self.inflight:
            # nothing awaits an ack: whatever the outbox holds is unsent, even below the
            # cursor (a batch the server refused, sales put back by a resend)
            self.cursor = 0
        more = True  # the outbox may hold sales after the cursor
        while more and len(self.inflight) < self.config.window:
            rows = self.store.outbox_wire_after(self.cursor, self.config.batch_size)
            # a short page is the whole outbox after the cursor: once it is sent, asking
            # again finds only sales sent or in flight (a sale journaled meanwhile pokes
            # the agent, which comes round again)
            more = len(rows) == self.config.batch_size
            inflight = {s for f in self.inflight.values() if f.kind == "sales" for s in f.seqs}
            rows = [(seq, sale) for seq, sale in rows if seq not in inflight]
            if not rows:
                break
            # the journal holds each sale exactly as validated when it was recorded, in its
            # canonical JSON: spliced into the signed batch, not decoded and encoded again
            body = sale_batch_body_json([sale for _, sale in rows])
            msg_id = uuid4_hex()
            payload = seal_hmac_body_json(
                "sale_batch",
                self.config.terminal_id,
                body,
                self.keys.current,  # signed when sent: after a rotation, with the new key
                self._now_ms(),
                msg_id,
            )
            if not self.link.publish(self._topics.sales, payload):
                return
            seqs = [seq for seq, _ in rows]
            if log.isEnabledFor(logging.INFO):  # its arguments cost more than the check
                log.info(
                    "%s: sent %d sale(s) in message %s",
                    self.config.terminal_id,
                    len(seqs),
                    msg_id,
                    extra={"msg_id": msg_id, "sale_ids": self._sale_ids(seqs)},
                )
            self.inflight[msg_id] = InFlight(seqs, self._mono())
            if self.awaiting_since is None:
                self.awaiting_since = self._mono()
            self.cursor = max(seqs)
            self.stats.batches_sent += 1
            self.stats.sales_sent += len(seqs)
        self.send_reversals()

    def send_reversals(self) -> None:
        """Reversals from their own outbox, after the sales (a reversal's sale goes first)."""
        more = True  # as with the sales (send): a short page is the whole outbox
        while more and len(self.inflight) < self.config.window:
            rows = reversals.outbox_after(self.store, self.rcursor, self.config.batch_size)
            more = len(rows) == self.config.batch_size
            inflight = {s for f in self.inflight.values() if f.kind == "reversals" for s in f.seqs}
            rows = [(seq, r) for seq, r in rows if seq not in inflight]
            if not rows:
                return
            msg_id = uuid4_hex()
            payload = seal_hmac(
                "reversal_batch",
                self.config.terminal_id,
                {"reversals": [r for _, r in rows]},
                self.config.secret,
                self._now_ms(),
                msg_id,
            )
            if not self.link.publish(self._topics.reversals, payload):
                return
            seqs = [seq for seq, _ in rows]
            self.inflight[msg_id] = InFlight(seqs, self._mono(), "reversals")
            if self.awaiting_since is None:
                self.awaiting_since = self._mono()
            self.rcursor = max(seqs)
            self.stats.batches_sent += 1
            self.stats.reversals_sent += len(seqs)

    def _sale_ids(self, seqs: list[int]) -> list[str]:
        return [f"{self.config.terminal_id}/{s}" for s in seqs]
