"""The server's presence as the sync agent hears it (``server.presence``).

The server counts as present while its signed ``online`` presence was heard within
``server_silence_s`` and no ``offline`` will since. An ``online`` presence counts only when
it is recent — its signed send time, by this terminal's clock corrected by the measured
offset, within ``server_silence_s`` — and its sequence is not below the last one seen from
the same server boot; it counts from its send time, not from its arrival, so a captured
``online`` replayed later (by anyone who can publish on the broker) keeps no terminal online.

An accepted ``online`` that says the server's newest delta version hands it to ``on_head``
(:meth:`terminal.sync_downstream.Downstream.on_server_head`) before anything else, and marks
the cache synced only when the cache holds that version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.protocol import ServerStatus
from terminal.config import TerminalConfig
from terminal.sync_record import SyncRecord

# the sync agent's logger: its lines keep the name they had before the agent was split
log = logging.getLogger("terminal.sync")


class ServerPresence:
    """When the server was last heard present (:attr:`heard`, monotonic; None when not
    since the last connect or its ``offline``)."""

    def __init__(
        self,
        config: TerminalConfig,
        record: SyncRecord,
        server_now_ms: Callable[[], int],
        monotonic: Callable[[], float],
        in_sync: Callable[[], bool],
        on_head: Callable[[int], bool] | None = None,
    ) -> None:
        self.config = config
        self.record = record
        self._server_now_ms = server_now_ms  # the agent's clock corrected by the measured offset
        self._mono = monotonic
        self._in_sync = in_sync  # the agent's in_sync, before this presence counts
        # the server's newest delta version said: whether the cache holds it (it catches up if not)
        self._on_head = on_head
        self.heard: float | None = None  # monotonic time of the last "online" presence
        # the newest presence accepted: (boot, seq, sent_at_ms), to refuse replays of older ones
        self._last: tuple[str, int, int] | None = None

    @property
    def present(self) -> bool:
        """The server's "online" presence was heard within ``server_silence_s``."""
        heard = self.heard
        return heard is not None and self._mono() - heard <= self.config.server_silence_s

    def on_presence(self, presence: ServerStatus, sent_at_ms: int) -> None:
        if presence.state == "online":
            age_ms = self._server_now_ms() - sent_at_ms
            last = self._last
            if age_ms > self.config.server_silence_s * 1000:
                log.warning(
                    "%s: ignored a server presence %d s old (replayed or delayed)",
                    self.config.terminal_id,
                    age_ms // 1000,
                )
                return
            if last is not None and (
                (presence.boot == last[0] and presence.seq < last[1])
                or (presence.boot != last[0] and sent_at_ms < last[2])
            ):
                log.warning(
                    "%s: ignored a server presence older than one already seen (replayed)",
                    self.config.terminal_id,
                )
                return
            held = True
            if presence.delta_version is not None and self._on_head is not None:
                held = self._on_head(presence.delta_version)
            if held and self._in_sync():
                self.record.mark_synced()  # the server was there, and we held its latest delta
            self._last = (presence.boot, presence.seq, sent_at_ms)
            # present from the moment it was sent, not from its arrival: a copy of the same
            # message arriving later extends nothing
            heard = self._mono() - max(age_ms, 0) / 1000
            self.heard = max(heard, self.heard or heard)
        else:
            if self._in_sync():
                self.record.mark_synced()
            self.heard = None
            log.warning("%s: the server went offline", self.config.terminal_id)
