"""What the sync agent keeps on disk about itself for its status and ``canteen-terminal
status``: the last error (a stable code and when) and the last moment the cache was known
current (``last_sync_ms``, from which the deny-list age limit counts)."""

from __future__ import annotations

import json
from collections.abc import Callable

from terminal.store import Store


class SyncRecord:
    def __init__(self, store: Store, now_ms: Callable[[], int]) -> None:
        self.store = store
        self._now_ms = now_ms  # the agent's clock, read when used
        # the last error, for the status: (stable code, when) — kept across restarts
        saved_error = json.loads(self.store.get_meta("last_error") or "null")
        self.last_error: tuple[str, int] | None = (saved_error[0], saved_error[1]) if saved_error else None
        self._error_saved_ms = 0
        saved_sync = self.store.get_meta("last_sync_ms")
        self.last_sync_ms: int | None = int(saved_sync) if saved_sync not in (None, "") else None
        self.stored_sync_ms = self.last_sync_ms  # what the database holds

    def note_error(self, code: str) -> None:
        """Remember the last error for the status; kept on disk for the next start when it
        is a new one, or a minute after the last write (an SD card is not written each
        second while the server stays unreachable)."""
        before, now = self.last_error, self._now_ms()
        self.last_error = (code, now)
        if before is None or before[0] != code or now - self._error_saved_ms >= 60_000:
            self._error_saved_ms = now
            self.store.set_metas({"last_error": json.dumps(list(self.last_error))})

    def mark_synced(self) -> None:
        """The cache is known current at this moment."""
        self.last_sync_ms = self._now_ms()
        if self.last_sync_ms != self.stored_sync_ms:  # several acks and deltas in one ms: once
            self.store.set_metas({"last_sync_ms": str(self.last_sync_ms)})
            self.stored_sync_ms = self.last_sync_ms
