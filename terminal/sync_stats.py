"""The sync agent's counters (:attr:`terminal.sync.SyncAgent.stats`), kept by each of its parts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SyncStats:
    batches_sent: int = 0
    sales_sent: int = 0
    acked: int = 0
    rejected: int = 0
    quarantined: int = 0  # held by the server for an admin's review: not applied, not resent
    resends: int = 0
    deltas_applied: int = 0
    snapshots: int = 0
    catchups: int = 0
    refused_messages: int = 0
    skipped_changes: int = 0  # downstream changes that would not decode (see terminal.sync_downstream)
    unread_balances: int = 0  # ack balances that would not decode (the result still counts)
    reversals_sent: int = 0
    reversals_acked: int = 0
    reversals_rejected: int = 0
    reversals_waiting: int = 0  # answered pending: the server waits for their sale
    reject_reasons: dict[str, int] = field(default_factory=dict)
