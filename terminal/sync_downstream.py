"""The sync agent's way down: the cache kept current with the server's deltas.

Deltas must arrive as ``version + 1``; an old one is ignored; a gap, or a fresh terminal,
triggers catch-up over HTTP (deltas since our version, or a snapshot). The newest delta is
retained by the broker, so every (re)connect reveals a gap at once. Changes this terminal
cannot read are skipped and reported (``sync_fault``) until a snapshot reads cleanly.

A lost *last* delta shows no gap until the next one comes. The server's presence may say its
newest delta version (:meth:`Downstream.on_server_head`): still behind a version heard at
least ``HEAD_GRACE_S`` earlier, the terminal catches up. The grace lets the deltas in flight
arrive (the server reads the version from its database, where a delta is recorded before it
is published), so a busy fleet does not ask the server over HTTP at every presence; a version
at or below ours (another server process's presence, read a heartbeat earlier) does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.protocol import DELTA_PAGE_SIZE, Delta, ProtocolError
from terminal.config import TerminalConfig
from terminal.server_http import ServerHttp, ServerUnreachable
from terminal.store import Store
from terminal.sync_record import SyncRecord
from terminal.sync_stats import SyncStats

# the sync agent's logger: its lines keep the name they had before the agent was split
log = logging.getLogger("terminal.sync")

# how long a delta version the server's presence said may stay ahead of ours before the
# terminal takes the delta for lost and catches up (seconds): longer than the publisher's lag
HEAD_GRACE_S = 2.0


class Downstream:
    """The cache's delta version (:attr:`version`), whether it must catch up
    (:attr:`need_catchup`) and when to try next (:attr:`next_catchup`, monotonic), and the
    downstream fault reported in the status (:attr:`sync_fault`)."""

    def __init__(
        self,
        config: TerminalConfig,
        store: Store,
        http: ServerHttp,
        stats: SyncStats,
        record: SyncRecord,
        now_ms: Callable[[], int],
        server_now_ms: Callable[[], int],
        monotonic: Callable[[], float],
        report_soon: Callable[[], None],
    ) -> None:
        self.config = config
        self.store = store
        self.http = http
        self.stats = stats
        self.record = record
        self._now_ms = now_ms  # the agent's clock, read when used
        self._server_now_ms = server_now_ms  # the same, corrected by the measured offset
        self._mono = monotonic
        self._report_soon = report_soon  # the next status goes at once
        # the cache's delta version: this agent alone applies deltas (Store.apply_changes),
        # so it knows the stored value once its transaction committed — not read back at
        # every delta and every status
        self.version = self.store.delta_version
        self.need_catchup = self.version == 0
        self.next_catchup = 0.0
        self.sync_fault: str | None = self.store.get_meta("sync_fault")
        # a version the server's presence said ahead of ours, and when first heard (monotonic)
        self._ahead: tuple[int, float] | None = None
        self.head_catchups = 0  # catch-ups started by a presence's version (not in SyncStats' report)

    def report_faults(self, where: str, faults: list[ProtocolError]) -> None:
        """Downstream changes this terminal could not read were skipped: it keeps selling on
        its last good state for those records, logs them, and reports the code in its
        status (``sync_fault``) until a snapshot reads cleanly."""
        if not faults:
            return
        self.stats.skipped_changes += len(faults)
        self.sync_fault = faults[0].code
        self.store.set_metas({"sync_fault": self.sync_fault})
        self.record.note_error(self.sync_fault)
        log.error(
            "%s: %s: %d change(s) unreadable, skipped (selling on the last good state): %s",
            self.config.terminal_id,
            where,
            len(faults),
            "; ".join(str(f) for f in faults[:3]),
        )
        self._report_soon()  # report it in the next status

    def on_delta(self, delta: Delta, faults: list[ProtocolError] | None = None) -> None:
        current = self.version
        if delta.version <= current:
            return
        if delta.version != current + 1:
            log.info(
                "%s: delta gap (have %d, got %d): catching up",
                self.config.terminal_id,
                current,
                delta.version,
            )
            self.need_catchup = True
            return
        # applied and known current (as SyncRecord.mark_synced records it): one commit, one
        # meta write — or, in the sync agent's batch (Store.begin_batch), the batch's commit,
        # which settles the rules; the version is then the one the batch will commit
        record = self.record
        now = self._now_ms()
        store = self.store
        with store.joined_txn():
            unstored = None if now == record.stored_sync_ms else now
            store.apply_changes(delta.version, delta.changes, synced_ms=unstored)
        record.last_sync_ms = record.stored_sync_ms = now
        self.version = delta.version  # committed (or to be, with its batch)
        if not store.conn.in_transaction:
            store.settle_rules()
        self.report_faults(f"delta {delta.version}", faults or [])
        self.stats.deltas_applied += 1

    def on_server_head(self, head: int) -> bool:
        """The server's presence says its newest delta is ``head``: whether the cache holds
        it. Behind a version said at least :data:`HEAD_GRACE_S` ago — a delta lost with no
        later one to reveal it — the cache catches up; never on one at or below ours."""
        current = self.version
        if head <= current:
            self._ahead = None
            return True
        ahead, now = self._ahead, self._mono()
        if ahead is None or ahead[0] <= current:  # the last one said ahead has come since
            self._ahead = (head, now)
            return False
        if now - ahead[1] >= HEAD_GRACE_S and not self.need_catchup:
            log.info(
                "%s: the server's newest delta is %d, ours %d: catching up",
                self.config.terminal_id,
                head,
                current,
            )
            self.need_catchup = True
            self.head_catchups += 1
            self._ahead = None
        return False

    def catch_up(self) -> None:
        """Fill a gap with the deltas the server still has, or take a whole snapshot."""
        now = self._server_now_ms()
        current = self.version
        try:
            faults: list[ProtocolError] = []
            if current > 0:
                deltas = self.http.deltas_since(current, now, faults)
                self.report_faults(f"catch-up after {current}", faults)
                if deltas and deltas[0].version == current + 1:
                    for d in deltas:
                        if d.version == self.version + 1:
                            self.store.apply_changes(d.version, d.changes)  # its own transaction
                            self.version = d.version
                    self.stats.catchups += 1
                    if self.version == deltas[-1].version:
                        if len(deltas) < DELTA_PAGE_SIZE:
                            self.need_catchup = False
                            self.record.mark_synced()
                        return
                    # a gap inside the page: the numbering moved on (the server's database was
                    # restored, server.downstream.backup_marks): the rest comes as a snapshot
                elif not deltas:
                    self.need_catchup = False
                    self.record.mark_synced()
                    return
            faults.clear()  # those of the deltas were reported above
            snap = self.http.snapshot(now, faults)
            self.store.apply_changes(snap.version, snap.changes, snapshot=True)
            self.version = snap.version
            if faults:
                self.report_faults(f"snapshot {snap.version}", faults)
            elif self.sync_fault is not None:  # the whole state read cleanly again
                self.sync_fault = None
                self.store.set_metas({"sync_fault": None})
            self.stats.snapshots += 1
            self.need_catchup = False
            self.record.mark_synced()
        except ServerUnreachable as exc:
            self.record.note_error("server_unreachable")
            log.warning("%s: catch-up failed, will retry: %s", self.config.terminal_id, exc)
            self.next_catchup = self._mono() + 1.0
        except ProtocolError as exc:
            log.error("%s: catch-up refused: %s", self.config.terminal_id, exc)
            self.next_catchup = self._mono() + 1.0
