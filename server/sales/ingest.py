"""The ingest worker: verify, apply at most once, commit, and only then acknowledge.

MQTT callbacks only :meth:`IngestWorker.submit` raw messages to a queue. One worker thread
takes whatever has queued up (up to ``max_messages``), and in **one** write transaction
verifies each message's signature and shape, applies its sales (:class:`SaleApplier`),
records status heartbeats and refusals, and records one delta for all balance changes.
After the commit it publishes one signed :class:`Ack` per message. A crash before the
commit loses nothing (the terminal still has the sales in its outbox and resends); a crash
after it loses only acks (the resend is answered ``duplicate`` with the first result).

Bad input never stops the worker: a malformed, forged or unknown message is refused with a
stable reason code, logged, stored in ``rejections`` and answered when the sender is known.
A revoked terminal's sales dated from its revocation on are rejected ``terminal_revoked``
(logged, nothing applied, not quarantined), its other messages refused with that code
(:mod:`server.registry.terminals` states the rule).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from server.books import ledger
from server.downstream.deltas import current_version, record_delta
from server.infra import db as dbm
from server.registry.terminals import SecretBook, record_status, revoked_at
from server.sales.apply import SaleApplier
from server.sales.quarantine import suspects, warn_suspects
from shared.clock import Clock
from shared.protocol import Ack, ProtocolError, SaleBatch, Status, open_envelope, seal_hmac, topics
from shared.protocol.codec import parse_json

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], bool]
Message = tuple[str, bytes]  # (topic, payload) as it came off the broker
INGEST_CACHE_KIB = 65_536
INGEST_WAL_AUTOCHECKPOINT_PAGES = 10_000


class Rejection(NamedTuple):
    """A message refused as a whole: stored in ``rejections`` and answered if the sender is known."""

    topic: str
    terminal_id: str | None  # the terminal the topic names, if any
    code: str
    detail: str


class Slot(NamedTuple):
    """Where one sale batch's results are in the applier's list, to answer it with one ack."""

    terminal_id: str
    msg_id: str
    results: list[int]


@dataclass
class IngestStats:
    messages: int = 0  # each message once: committed, or dropped after an unexpected error
    applied: int = 0
    duplicates: int = 0
    rejected_sales: int = 0
    quarantined_sales: int = 0  # held back as implausible, for an admin (server.sales.quarantine)
    rejected_messages: int = 0
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    dropped_messages: int = 0  # failed with an unexpected error (a bug): logged, never acknowledged


class IngestWorker:
    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: Clock,
        publish: Publish,
        *,
        on_delta: Callable[[], None] | None = None,
        max_messages: int = 1024,
        max_bytes: int = 1_000_000,
    ) -> None:
        self._conn = conn
        # The one writer's connection: a page cache large enough for the hot index pages,
        # and WAL checkpoints every ~40 MB instead of ~4 MB, so a page that many commits
        # touch (an index leaf, a payable) is copied into the database once per checkpoint,
        # not once per few commits. Durability is unchanged: every commit still fsyncs the WAL.
        conn.execute(f"PRAGMA cache_size=-{INGEST_CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint={INGEST_WAL_AUTOCHECKPOINT_PAGES}")
        self._clock = clock
        self._publish = publish
        self._on_delta = on_delta or (lambda: None)
        self._book = SecretBook(conn)
        self._accounts = ledger.AccountCache()
        self._queue: queue.Queue[Message | None] = queue.Queue()
        # One transaction takes whatever has queued, up to these limits (~2,000 sales): many
        # sales per commit share the index pages each commit must write and fsync; at low load
        # the queue holds one or two messages and a transaction is that small.
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.stats = IngestStats()
        self.idle = threading.Event()
        self.idle.set()

    # --- thread plumbing -------------------------------------------------------------------

    def submit(self, topic: str, payload: bytes) -> None:
        """MQTT callback target: hand the message over, nothing else."""
        self.idle.clear()
        self._queue.put((topic, payload))

    def start(self) -> IngestWorker:
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(10)

    def room_for(self, messages: int, payload_bytes: int) -> bool:
        """Whether a transaction holding this much may take another message."""
        return messages < self.max_messages and payload_bytes < self.max_bytes

    def groups(self, messages: Iterable[Message]) -> Iterator[list[Message]]:
        """Split messages into transactions: the worker's loop runs its queue through here.

        A group is handed out as soon as it is full, before the next message is taken, so
        a lazy source (the queue) is read no further than the transaction needs."""
        group: list[Message] = []
        size = 0
        for m in messages:
            group.append(m)
            size += len(m[1])
            if not self.room_for(len(group), size):
                yield group
                group, size = [], 0
        if group:
            yield group

    def _queued(self) -> Iterator[Message]:
        """Waits for one message, then takes whatever else has queued up, without waiting;
        ends there, or at the stop sentinel (which ends the loop too)."""
        item = self._queue.get()
        while item is not None:
            yield item
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
        self._stopping = True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping:
            for batch in self.groups(self._queued()):
                self._process_logged(batch)
                if self._queue.empty():
                    self.idle.set()

    def _process_logged(self, batch: list[Message]) -> None:
        try:
            self.process(batch)
        except sqlite3.Error:
            # nothing was committed and nothing acknowledged: terminals will resend
            log.exception("ingest: database error; %d messages left unacknowledged", len(batch))
        except Exception:  # noqa: BLE001 — one bad message must not stop ingest for every terminal
            log.exception("ingest: unexpected error; trying the %d messages one by one", len(batch))
            self._one_by_one(batch)

    def _one_by_one(self, batch: list[Message]) -> None:
        """After an unexpected error: each message in its own transaction, so only the one
        that fails is dropped (unacknowledged, logged, counted); a good sale in the same
        group is applied, and if it was lost too its terminal resends it."""
        for topic, payload in batch:
            try:
                self.process([(topic, payload)])
            except Exception:  # noqa: BLE001 — logged with its traceback; the worker goes on
                self.stats.messages += 1
                self.stats.dropped_messages += 1
                log.exception(
                    "ingest: dropped a message on %s (%d bytes) after an unexpected error",
                    topic,
                    len(payload),
                )

    # --- the work --------------------------------------------------------------------------

    def process(self, messages: list[Message]) -> None:
        """Verify, apply and commit a group of messages, then publish their acks."""
        now = self._clock.now_ms()
        replies: list[tuple[str, Ack]] = []
        rejections: list[Rejection] = []
        try:
            with dbm.write_txn(self._conn):
                applier, delta_recorded = self._apply(messages, now, replies, rejections)
                flagged = (
                    suspects(self._conn, now, applier.quarantined_terminals) if applier.quarantined else []
                )
        except BaseException:
            self._accounts.rollback()  # accounts created in the failed txn do not exist
            raise
        self._accounts.commit()
        # committed: now, and only now, tell the terminals (and count: a group that failed
        # and is retried one by one is counted by the retries)
        self.stats.messages += len(messages)
        self.stats.batches += 1
        self.stats.applied += applier.applied
        self.stats.duplicates += applier.duplicates
        self.stats.rejected_sales += applier.rejected
        self.stats.quarantined_sales += applier.quarantined
        for sale_id, code, detail in applier.held:
            log.warning("ingest: sale %s quarantined for review: %s (%s)", sale_id, code, detail)
        warn_suspects(flagged)
        for sale_id in applier.revoked_refused:
            log.warning(
                "ingest: sale %s refused: terminal_revoked (signed after its terminal was revoked)", sale_id
            )
        self.stats.rejected_messages += len(rejections)
        for r in rejections:
            self.stats.rejection_reasons[r.code] = self.stats.rejection_reasons.get(r.code, 0) + 1
            log.warning("ingest: refused message from %s: %s (%s)", r.terminal_id or "?", r.code, r.detail)
        for terminal_id, ack in replies:
            secret = self._book.secret(terminal_id)
            if secret is None:
                continue
            payload = seal_hmac("ack", "server", ack.to_body(), secret, self._clock.now_ms())
            self._publish(topics.ack(terminal_id), payload, False)
        if delta_recorded:
            self._on_delta()

    def _apply(
        self,
        messages: list[Message],
        now: int,
        replies: list[tuple[str, Ack]],
        rejections: list[Rejection],
    ) -> tuple[SaleApplier, bool]:
        """The work inside the write transaction; returns the applier and whether a delta was recorded."""
        applier = SaleApplier(self._conn, now, current_version(self._conn) + 1, self._accounts)
        slots: list[Slot] = []
        # revocations by terminal, read once per transaction: this transaction holds the
        # write lock, so no revocation can commit while it runs (a revocation holds from the
        # next transaction on; on PostgreSQL this spares a round trip per message)
        revocations: dict[str, int | None] = {}
        for topic, payload in messages:
            claimed = topics.terminal_of(topic)
            try:
                env = open_envelope(payload, secret_for=self._book.secret)
                if claimed is None or env.sender != claimed:
                    raise ProtocolError("terminal_mismatch", f"{env.sender} on {topic}")
                if env.sender not in revocations:
                    revocations[env.sender] = revoked_at(self._conn, env.sender)
                revoked = revocations[env.sender]
                if topic == topics.sales(claimed) and env.type == "sale_batch":
                    batch = SaleBatch.from_body(env.body, env.sender)
                    canteen = self._book.canteen(env.sender) or ""
                    slots.append(
                        Slot(
                            env.sender, env.msg_id, [applier.apply(s, canteen, revoked) for s in batch.sales]
                        )
                    )
                elif revoked is not None:
                    raise ProtocolError("terminal_revoked", f"{env.sender} was revoked; {env.type} refused")
                elif topic == topics.status(claimed) and env.type == "status":
                    record_status(self._conn, env.sender, Status.from_body(env.body), env.sent_at_ms)
                else:
                    raise ProtocolError("bad_field", f"{env.type} not accepted on {topic}")
            except ProtocolError as exc:
                rejections.append(Rejection(topic, claimed, exc.code, exc.detail))
                if claimed is not None and self._book.secret(claimed) is not None:
                    replies.append((claimed, Ack(in_reply_to=_msg_id_of(payload), reason=exc.code)))
        results = applier.finish()
        for slot in slots:
            replies.append((slot.terminal_id, Ack(slot.msg_id, tuple(results[i] for i in slot.results))))
        delta_recorded = False
        if applier.changes or applier.extra_changes:
            record_delta(self._conn, list(applier.changes.values()) + applier.extra_changes, now)
            delta_recorded = True
        if rejections:
            self._conn.executemany(
                "INSERT INTO rejections(at_ms, topic, terminal_id, reason, detail) VALUES (?, ?, ?, ?, ?)",
                [(now, r.topic, r.terminal_id, r.code, r.detail[:500]) for r in rejections],
            )
        dbm.bump_counter(self._conn, "sales_applied", applier.applied)
        dbm.bump_counter(self._conn, "sales_duplicate", applier.duplicates)
        dbm.bump_counter(self._conn, "sales_rejected", applier.rejected)
        dbm.bump_counter(self._conn, "sales_quarantined", applier.quarantined)
        dbm.bump_counter(self._conn, "messages_rejected", len(rejections))
        return applier, delta_recorded


def _msg_id_of(payload: bytes) -> str:
    """Best-effort msg_id of a refused message, for the refusal's ``in_reply_to``."""
    try:
        raw = parse_json(payload)
    except ProtocolError:
        return "-"
    msg_id = raw.get("msg_id") if isinstance(raw, dict) else None
    return msg_id if isinstance(msg_id, str) and 0 < len(msg_id) <= 64 else "-"
