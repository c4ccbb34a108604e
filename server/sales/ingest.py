"""The ingest worker: verify, apply at most once, commit, and only then acknowledge.

MQTT callbacks only :meth:`IngestWorker.submit` raw messages to a queue. One worker thread
takes whatever has queued up (up to ``max_messages``), verifies each message's signature and
shape (before the transaction: CPU work, no lock held; :mod:`server.sales.opening`), then in
**one** write transaction applies its sales (:class:`SaleApplier`), records status heartbeats
and refusals, and records one delta for all balance changes.
After the commit it publishes one signed :class:`Ack` per message. A crash before the
commit loses nothing (the terminal still has the sales in its outbox and resends); a crash
after it loses only acks (the resend is answered ``duplicate`` with the first result).

Bad input never stops the worker: a malformed, forged or unknown message is refused with a
stable reason code, logged, stored in ``rejections`` and answered when the sender is known.
A revoked terminal's sales dated from its revocation on are rejected ``terminal_revoked``
(logged, nothing applied, not quarantined), its other messages refused with that code
(:mod:`server.registry.terminals` states the rule).

**Key rotation** (:mod:`server.registry.rotation`): a message is verified with the
terminal's current key, else its offered next key, else (for a grace period) the key
before. A status signed with the current key while a rotation is under way is answered,
after the commit, with the sealed next key on the terminal's retained ``down/rekey`` topic
(at most every :data:`REKEY_REPEAT_S`); the first message signed with the next key completes
the rotation in the same transaction, the offer is withdrawn and ``on_keys_changed`` (the
service: rewrite the broker's password file and reload it) is called.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from server.books import ledger
from server.downstream.deltas import HEAD_VERSION_SQL, current_version, record_delta
from server.infra import db as dbm
from server.infra.metrics import ServerMetrics
from server.infra.terminal_keys import CURRENT, NEXT
from server.registry import rotation
from server.registry.terminals import (
    KEYS_VERSION_SQL,
    STATUS_COLUMNS,
    SecretBook,
    record_status,
    record_status_read,
    revocations_with,
)
from server.registry.updates import record_report
from server.sales.apply import PERIOD_HEADS, SaleApplier
from server.sales.opening import Opened, msg_id_of, open_decoded
from server.sales.quarantine import suspects, warn_suspects
from server.sales.reversals import ReversalApplier
from shared.clock import Clock
from shared.protocol import (
    Ack,
    ProtocolError,
    ReversalAck,
    ReversalBatch,
    SaleBatch,
    ServerKey,
    UpdateReport,
    seal_hmac,
    seal_server,
    topics,
)
from shared.protocol.reversals import PENDING_REPLY

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], bool]
Message = tuple[str, bytes]  # (topic, payload) as it came off the broker
INGEST_CACHE_KIB = 65_536
INGEST_WAL_AUTOCHECKPOINT_PAGES = 10_000
REKEY_REPEAT_S = 30.0  # a terminal not taking its offered key is offered it again this often


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


class SaleMessage(NamedTuple):
    """A verified sale batch, decided after the transaction's messages are read, so that
    all its sales are read ahead together (:meth:`SaleApplier.prefetch`)."""

    terminal_id: str
    msg_id: str
    batch: SaleBatch
    canteen_id: str
    revoked_at_ms: int | None


class ReversalMessage(NamedTuple):
    """A verified reversal batch, decided after the sales of the same transaction (so a
    reversal finds its sale even when both arrive together)."""

    terminal_id: str
    msg_id: str
    batch: ReversalBatch
    revoked_at_ms: int | None


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
    reversals_applied: int = 0  # reversals (冲正), server.sales.reversals
    reversals_pending: int = 0  # kept until their sale arrives
    reversals_rejected: int = 0
    reversals_duplicate: int = 0


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
        server_key: ServerKey | None = None,
        on_keys_changed: Callable[[], None] | None = None,
        metrics: ServerMetrics | None = None,
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
        self._server_key = server_key  # seals rekey offers; None: rotation offers only over HTTP
        self._on_keys_changed = on_keys_changed or (lambda: None)
        self.metrics = metrics
        self._offered: dict[str, float] = {}  # terminal → monotonic time of its last rekey offer
        self._arrivals: list[float] = []  # arrival times of the messages taken, in order
        self._keys = _KeyEvents()
        self._book = SecretBook(conn)
        self._book.refresh()  # then checked in each transaction (_apply: _StaleKeys)
        self._accounts = ledger.AccountCache()
        self._queue: queue.Queue[tuple[str, bytes, float] | None] = queue.Queue()
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
        self._queue.put((topic, payload, time.monotonic()))

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

    def _queued(self, wait: bool = True) -> Iterator[Message]:
        """Waits for one message (unless told not to), then takes whatever else has queued
        up, without waiting; ends there, or at the stop sentinel (which ends the loop too)."""
        try:
            item = self._queue.get(block=wait)
        except queue.Empty:
            return
        while item is not None:
            self._arrivals.append(item[2])
            yield item[0], item[1]
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

    def drain(self) -> int:
        """Process what has queued up now, in the thread's groups, without waiting; returns
        the number of groups. For a worker run without its thread (the deterministic
        simulator, ``simulator.vopr``)."""
        groups = 0
        for batch in self.groups(self._queued(wait=False)):
            self._process_logged(batch)
            groups += 1
        if self._queue.empty():
            self.idle.set()
        return groups

    def _process_logged(self, batch: list[Message]) -> None:
        arrivals, self._arrivals = self._arrivals[: len(batch)], self._arrivals[len(batch) :]
        try:
            self.process(batch)
            if self.metrics is not None:
                done = time.monotonic()
                for t in arrivals:
                    self.metrics.ingest_latency.observe(done - t)
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
        while True:
            replies: list[tuple[str, Ack | ReversalAck]] = []
            rejections: list[Rejection] = []
            keys = self._keys = _KeyEvents()
            # opened, verified and decoded before the transaction: no lock held for CPU work
            # (with the keys as cached: the transaction checks they are still the keys)
            opened = [open_decoded(self._book, topic, payload, now) for topic, payload in messages]
            # a reversal's cardholder is known only once its sale is read: its batch runs alone
            exclusive = any(o.kind == "reversal_batch" for o in opened)
            try:
                with dbm.ingest_txn(self._conn, exclusive=exclusive) as shared:
                    applier, reversals, delta_recorded = self._apply(opened, now, replies, rejections, shared)
                    quarantined = applier.quarantined_terminals if applier.quarantined else None
                    flagged = suspects(self._conn, now, quarantined) if quarantined is not None else []
            except _StaleKeys:
                # another process changed a terminal's keys (a rotation): nothing was kept;
                # read the keys again, then open the messages again with them
                self._accounts.rollback()
                self._book.refresh()
                continue
            except BaseException:
                self._accounts.rollback()  # accounts created in the failed txn do not exist
                raise
            break
        self._accounts.commit()
        if keys.completed:
            self._book.refresh()  # acks from now on are signed with the new keys
        # committed: now, and only now, tell the terminals (and count: a group that failed
        # and is retried one by one is counted by the retries)
        self.stats.messages += len(messages)
        self.stats.batches += 1
        self.stats.applied += applier.applied
        self.stats.duplicates += applier.duplicates
        self.stats.rejected_sales += applier.rejected
        self.stats.quarantined_sales += applier.quarantined
        if reversals is not None:
            self.stats.reversals_applied += reversals.applied
            self.stats.reversals_pending += reversals.pending
            self.stats.reversals_rejected += reversals.rejected
            self.stats.reversals_duplicate += reversals.duplicates
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
        if replies and log.isEnabledFor(logging.INFO):
            # the sale ids of this commit and what became of each: one line per transaction,
            # the link between a terminal's log and the ledger (shared.log_setup)
            sales = {f"{r.terminal_id}/{r.seq}": r.status for _, ack in replies for r in ack.results}
            if sales:
                log.info(
                    "ingest: committed %d sale(s): %d applied, %d duplicate, %d rejected, %d quarantined",
                    len(sales),
                    applier.applied,
                    applier.duplicates,
                    applier.rejected,
                    applier.quarantined,
                    extra={"sales": sales},
                )
        for terminal_id, ack in replies:
            secret = self._book.secret(terminal_id)
            if secret is None:
                continue
            kind = "reversal_ack" if isinstance(ack, ReversalAck) else "ack"
            payload = seal_hmac(kind, "server", ack.to_body(), secret, self._clock.now_ms())
            self._publish(topics.ack(terminal_id), payload, False)
        if delta_recorded:
            self._on_delta()
        self._count(applier, rejections)
        self._rekey(keys)

    def _count(self, applier: SaleApplier, rejections: list[Rejection]) -> None:
        m = self.metrics
        if m is None:
            return
        m.sales.labels("applied").inc(applier.applied)
        m.sales.labels("duplicate").inc(applier.duplicates)
        m.sales.labels("rejected").inc(applier.rejected)
        m.sales.labels("quarantined").inc(applier.quarantined)
        for _sale_id, code, _detail in applier.held:
            m.quarantined.labels(code).inc()
        for r in rejections:
            m.refused.labels(r.code).inc()

    def _rekey(self, keys: _KeyEvents) -> None:
        """After the commit: withdraw the offers of completed rotations, tell the service
        (broker password file), and offer pending ones their next key."""
        for terminal_id in keys.completed:
            self._offered.pop(terminal_id, None)
            log.info("ingest: terminal %s now signs with its new key (rotation complete)", terminal_id)
            self._publish(topics.rekey(terminal_id), b"", True)  # clears the retained offer
        if keys.completed:
            self._on_keys_changed()
        if self._server_key is None:
            return
        for terminal_id in keys.due - keys.completed:
            last = self._offered.get(terminal_id)
            if last is not None and time.monotonic() - last < REKEY_REPEAT_S:
                continue
            offer = rotation.offer(self._conn, terminal_id)
            if offer is None:
                continue
            payload = seal_server("rekey", offer.to_body(), self._server_key, self._clock.now_ms())
            if self._publish(topics.rekey(terminal_id), payload, True):
                self._offered[terminal_id] = time.monotonic()
                log.info("ingest: offered terminal %s its next key %s", terminal_id, offer.key_id)

    def _apply(
        self,
        opened: list[Opened],
        now: int,
        replies: list[tuple[str, Ack | ReversalAck]],
        rejections: list[Rejection],
        shared: bool = False,
    ) -> tuple[SaleApplier, ReversalApplier | None, bool]:
        """The work inside the write transaction; returns the appliers (the reversals' if
        any were decided) and whether a delta was recorded. ``shared``: another ingest
        transaction may run at once (:func:`server.infra.db.ingest_txn`): the keys this one
        reads then writes are locked first, the shared writes made under the tail lock."""
        if dbm.dialect(self._conn) == "postgresql":
            # psycopg prepares a statement run five times, and PostgreSQL then plans it once
            # for any parameters: for this transaction's IN lists (a few hundred cards, keys,
            # holders) that generic plan scanned every sale for every holder, falling from
            # ~2,000 to ~800 sales/s in-process over 30,000 sales. Planned per execution
            # here (a few dozen statements per transaction); per transaction, so a
            # replaced connection has it too.
            self._conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        if shared:
            dbm.lock_keys(self._conn, _keys_of(self._conn, opened))
        # the delta version is taken where the shared writes begin (below); the applier
        # stamps it only in finish()
        applier = SaleApplier(self._conn, now, 0, self._accounts)
        keys = self._keys  # rotations seen in this transaction (process() made it)
        slots: list[Slot] = []
        sale_messages: list[SaleMessage] = []
        reversal_messages: list[ReversalMessage] = []
        # revocations of the topics' terminals, read once per transaction in one query: this
        # transaction holds the write lock, so no revocation can commit while it runs (a
        # revocation holds from the next transaction on; on PostgreSQL a round trip is a cost)
        # — and, in the same query, when each was created (the plausibility check's facts)
        # and whether a reversal of one of its sales waits (the terminals are locked, and a
        # reversal is only ever made waiting by an exclusive transaction: this holds to the end),
        # what a status of theirs reads, what is closed and the delta log's head
        terminal_rows = revocations_with(
            self._conn, {o.claimed for o in opened if o.claimed is not None}, _TERMINAL_COLUMNS
        )
        revoked_by_terminal = {t: row[0] if row else None for t, row in terminal_rows.items()}
        found = [row for row in terminal_rows.values() if row]
        # the messages were verified with the cached keys: they must be the keys now (one
        # writer, and a rotation is written under the exclusive write lock: to the commit)
        if found and not self._book.holds(found[0][_KEYS_AT]):
            raise _StaleKeys
        applier.know_terminals({t: row[1] for t, row in terminal_rows.items() if row})
        if found:  # what is closed: the same in every row
            applier.know_periods(found[0][_PERIODS_AT], found[0][_PERIODS_AT + 1])
        waiting_by_terminal = {t: bool(row[2]) for t, row in terminal_rows.items() if row}
        # a terminal's row as its first status in this transaction finds it (a later one reads
        # what the first wrote)
        status_rows = {t: row[_STATUS_AT:] for t, row in terminal_rows.items() if row}
        for o in opened:
            try:
                if o.env is None:
                    raise o.refused  # type: ignore[misc]  # could not be opened: refused as it is
                env = o.env
                if o.which == NEXT and rotation.complete(self._conn, env.sender, now):
                    keys.completed.add(env.sender)
                revoked = revoked_by_terminal[env.sender]  # the sender is the topic's terminal
                if o.kind == "sale_batch":
                    canteen = self._book.canteen(env.sender) or ""
                    sale_messages.append(SaleMessage(env.sender, env.msg_id, o.body(), canteen, revoked))
                elif o.kind == "reversal_batch":
                    reversal_messages.append(ReversalMessage(env.sender, env.msg_id, o.body(), revoked))
                elif revoked is not None:
                    raise ProtocolError("terminal_revoked", f"{env.sender} was revoked; {env.type} refused")
                elif o.kind == "status":
                    if env.sender in status_rows:
                        read = status_rows.pop(env.sender)
                        record_status_read(self._conn, env.sender, o.body(), env.sent_at_ms, now, read)
                    else:
                        record_status(self._conn, env.sender, o.body(), env.sent_at_ms, now)
                    if o.which == CURRENT and self._book.rotation_pending(env.sender):
                        keys.due.add(env.sender)
                elif o.kind == "update_report":
                    # what became of an offered update: kept, then acknowledged (the ack of a
                    # "running" report is what keeps a new version on the terminal)
                    report = o.body()
                    record_report(self._conn, env.sender, env.msg_id, report, env.sent_at_ms, now)
                    _log_report(env.sender, report)
                    replies.append((env.sender, Ack(in_reply_to=env.msg_id)))  # the topic's terminal
                else:
                    raise ProtocolError("bad_field", f"{env.type} not accepted on {o.topic}")
            except ProtocolError as exc:
                rejections.append(Rejection(o.topic, o.claimed, exc.code, exc.detail))
                if o.claimed is not None and self._book.secret(o.claimed) is not None:
                    replies.append((o.claimed, Ack(in_reply_to=msg_id_of(o.payload), reason=exc.code)))
        # every sale of the transaction read ahead in a few queries, then decided in order
        applier.prefetch(s for m in sale_messages for s in m.batch.sales)
        for m in sale_messages:
            results_of = [applier.apply(s, m.canteen_id, m.revoked_at_ms) for s in m.batch.sales]
            slots.append(Slot(m.terminal_id, m.msg_id, results_of))
        if rejections:
            self._conn.executemany(
                "INSERT INTO rejections(at_ms, topic, terminal_id, reason, detail) VALUES (?, ?, ?, ?, ?)",
                [(now, r.topic, r.terminal_id, r.code, r.detail[:500]) for r in rejections],
            )
        decided = applier.decided_keys  # a reversal waiting for one of these sales is decided now
        waiting = _waiting(self._conn, {t for t, _ in decided}, waiting_by_terminal)
        # from here to the commit: the writes every ingest transaction shares (the canteens'
        # payables, the takings sums, the counters, the delta), one transaction at a time,
        # and the version read under that lock, so the versions commit in order, gapless;
        # the sales' txns, entries and purse balances first, guarded by the holders' key locks.
        # One writer (SQLite, or an exclusive transaction): the head read with the terminals
        # holds to the commit, as no delta is recorded in this transaction before its own
        if shared:
            applier.post_own()
            dbm.lock_tail(self._conn)
        head = current_version(self._conn) if shared or not found else found[0][_HEAD_AT]
        version = applier.version = head + 1
        results = applier.finish()
        for slot in slots:
            replies.append((slot.terminal_id, Ack(slot.msg_id, tuple(results[i] for i in slot.results))))
        reversals = self._apply_reversals(applier, reversal_messages, waiting, now, version, replies)
        changes = dict(applier.changes)
        if reversals is not None:  # read after the reversals moved money: the newer state
            changes.update(reversals.changes)
        delta_recorded = False
        if changes or applier.extra_changes:
            record_delta(self._conn, list(changes.values()) + applier.extra_changes, now)
            delta_recorded = True
        counts = {
            "sales_applied": applier.applied,
            "sales_duplicate": applier.duplicates,
            "sales_rejected": applier.rejected,
            "sales_quarantined": applier.quarantined,
            "messages_rejected": len(rejections),
        }
        if reversals is not None:
            counts.update(reversals_applied=reversals.applied, reversals_rejected=reversals.rejected)
        dbm.bump_counters(self._conn, counts)  # one statement
        return applier, reversals, delta_recorded

    def _apply_reversals(
        self,
        sales: SaleApplier,
        messages: list[ReversalMessage],
        waiting: bool,
        now: int,
        version: int,
        replies: list[tuple[str, Ack | ReversalAck]],
    ) -> ReversalApplier | None:
        """Reversals waiting for the sales just stored, then the reversal batches of this
        transaction; their acks (and, unasked, the waiting ones' results) join ``replies``.
        ``waiting``: a reversal waits for one of the sales just stored. None when there was
        nothing to decide."""
        if not messages and not waiting:
            return None
        rev = ReversalApplier(self._conn, now, version, self._accounts)
        if waiting:
            rev.apply_waiting(sales.decided_keys)
        slots = []
        for m in messages:
            canteen = self._book.canteen(m.terminal_id) or ""
            slots.append((m, [rev.apply(r, canteen, m.revoked_at_ms) for r in m.batch.reversals]))
        results = rev.finish()
        for m, idx in slots:
            replies.append((m.terminal_id, ReversalAck(m.msg_id, tuple(results[i] for i in idx))))
        for terminal_id, decided in rev.unasked_results().items():
            replies.append((terminal_id, ReversalAck(PENDING_REPLY, tuple(decided))))
        return rev


def _keys_of(conn: sqlite3.Connection, opened: list[Opened]) -> set[str]:
    """What a shared ingest transaction must lock before it reads anything: the terminals
    of its messages (their sales' keys, statuses, facts), the cardholders of its sales'
    cards (the purse split is read then written; PIN approvals, QR codes and claw-back lines
    are the holder's) and its sales' credentials (a SUN counter or an eCNY order used twice
    is the same string; a QR code is also its card's). Cards are read under the shared write
    lock: no other writer can move a card meanwhile."""
    keys = {f"terminal:{o.claimed}" for o in opened if o.claimed is not None}
    cards: set[str] = set()
    for o in opened:
        if o.kind == "sale_batch" and not isinstance(o.decoded, ProtocolError):
            for sale in o.body().sales:
                if sale.card_id is not None:  # none: a sale paid without a card (eCNY)
                    cards.add(sale.card_id)
                if sale.credential:
                    keys.add(f"credential:{sale.credential}")
    for chunk in dbm.chunks(sorted(cards)):
        marks = ", ".join("?" * len(chunk))
        keys.update(
            f"holder:{r[0]}"
            for r in conn.execute(f"SELECT DISTINCT holder_id FROM cards WHERE card_id IN ({marks})", chunk)
        )
    return keys


# what the ingest transaction reads of its terminals besides their revocation: when each was
# created, and whether a reversal of one of its sales waits for that sale (a partial index
# holds only the waiting ones, so this costs nothing on the usual path)
_TERMINAL_COLUMNS = (
    "t.created_at_ms",
    "EXISTS (SELECT 1 FROM reversals rv WHERE rv.status = 'pending' AND rv.terminal_id = t.id)",
    f"({HEAD_VERSION_SQL})",  # the same in every row (one writer: read once, see _apply)
    KEYS_VERSION_SQL,  # the same in every row
    *PERIOD_HEADS,  # the same in every row
    *STATUS_COLUMNS,
)
# where they are in a row of revocations_with (which puts the revocation first)
_HEAD_AT = 3
_KEYS_AT = 4
_PERIODS_AT = 5
_STATUS_AT = 5 + len(PERIOD_HEADS)


class _StaleKeys(Exception):
    """Raised in the ingest transaction when the keys its messages were verified with are
    no longer the terminals' keys: rolled back, then done again (:meth:`IngestWorker.process`)."""


def _waiting(conn: sqlite3.Connection, terminal_ids: set[str], known: dict[str, bool]) -> bool:
    """Whether any of these terminals has a reversal waiting for its sale: from ``known``
    (read with the transaction's terminals), asking the database only of the others."""
    if any(known.get(t) for t in terminal_ids):
        return True
    unknown = {t for t in terminal_ids if t not in known}
    return bool(unknown) and _any_waiting(conn, unknown)


def _any_waiting(conn: sqlite3.Connection, terminal_ids: set[str]) -> bool:
    """Whether any of these terminals has a reversal waiting for its sale (a partial index
    holds only those, so this costs nothing on the usual path)."""
    ids = sorted(terminal_ids)
    marks = ", ".join("?" * len(ids))
    return (
        conn.execute(
            f"SELECT 1 FROM reversals WHERE status = 'pending' AND terminal_id IN ({marks}) LIMIT 1", ids
        ).fetchone()
        is not None
    )


def _log_report(terminal_id: str, report: UpdateReport) -> None:
    bad = report.state in ("refused", "failed", "rolled_back")
    log.log(
        logging.WARNING if bad else logging.INFO,
        "update: %s %s %s %s%s (running %s)",
        terminal_id,
        report.kind,
        report.version,
        report.state,
        f": {report.code} ({report.detail})" if report.code else "",
        report.running or "?",
    )


@dataclass
class _KeyEvents:
    """Rotations seen in one transaction: completed (signed with the next key), and due an
    offer (a status signed with the current key while a next key waits)."""

    completed: set[str] = field(default_factory=set)
    due: set[str] = field(default_factory=set)
