"""The clock offset server − terminal, as the sync agent measures it.

Measured over HTTP (``/api/v1/health``, NTP style) on every connect and every
``clock_probe_s`` (:meth:`ServerClock.probe`), and from every ack's send time
(:meth:`ServerClock.measure_ack`). It is stored with the boot id: after a reboot the old
value says nothing about the new clock and is dropped until measured again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from terminal.config import TerminalConfig
from terminal.server_http import ServerHttp, ServerUnreachable
from terminal.store import Store

# the sync agent's logger: its lines keep the name they had before the agent was split
log = logging.getLogger("terminal.sync")

# an ack sets the clock only when it answers a message sent at most this long ago: the
# offset is then off by at most half of it (the HTTP probe's answer is judged the same way)
MAX_ACK_CLOCK_RTT_MS = 2_000


class ServerClock:
    """The offset server − terminal (:attr:`offset_ms`, None until measured in this boot),
    and when to probe it next (:attr:`next_probe`, monotonic seconds)."""

    def __init__(
        self,
        config: TerminalConfig,
        store: Store,
        http: ServerHttp,
        now_ms: Callable[[], int],
        monotonic: Callable[[], float],
        boot_id: str,
    ) -> None:
        self.config = config
        self.store = store
        self.http = http
        self._now_ms = now_ms  # the agent's clock, read when used
        self._mono = monotonic
        self.boot_id = boot_id
        same_boot = self.store.get_meta("clock_boot_id") == self.boot_id
        saved = self.store.get_meta("clock_offset_ms") if same_boot else None
        self.offset_ms: int | None = int(saved) if saved not in (None, "") else None
        self.next_probe = 0.0

    def measure_ack(self, server_ms: int, sent_at: float | None) -> None:
        """The offset from an ack's send time, NTP style (``sent_at``: when the message it
        answers was sent, monotonic, None when no longer in flight): only an ack answering a
        message still in flight whose round trip was short (:data:`MAX_ACK_CLOCK_RTT_MS`)
        says what time it is now — the server sent it between our send and now, so the
        midpoint is off by at most half the round trip. An ack that spent hours in a broker
        queue (a copy delivered late, an answer to a message already resent) would set the
        clock back by hours and misdate the next sales (found by the deterministic
        simulator, seed 39)."""
        if sent_at is None:
            return
        rtt_ms = int((self._mono() - sent_at) * 1000)
        if not 0 <= rtt_ms <= MAX_ACK_CLOCK_RTT_MS:
            return
        self.set_offset(server_ms - (self._now_ms() - rtt_ms // 2))

    def set_offset(self, offset: int) -> None:
        old = self.offset_ms
        self.offset_ms = offset
        if old is None or abs(old - offset) >= 1000:
            self.store.set_metas({"clock_offset_ms": str(offset), "clock_boot_id": self.boot_id})
            if old is None or abs(offset) > 60_000:
                log.info("%s: clock offset to the server %+d ms", self.config.terminal_id, offset)

    def probe(self) -> None:
        """Measure the offset over HTTP now; the next probe in ``clock_probe_s`` (sooner
        when the server could not be reached)."""
        self.next_probe = self._mono() + self.config.clock_probe_s
        try:
            offset, rtt = self.http.clock_offset(self._now_ms)
        except ServerUnreachable as exc:
            log.warning("%s: clock probe failed: %s", self.config.terminal_id, exc)
            self.next_probe = self._mono() + min(self.config.clock_probe_s, 5.0)
            return
        self.set_offset(offset)


def machine_boot_id() -> str:
    """This boot of the machine (Linux); a clock measured in another boot is not trusted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
