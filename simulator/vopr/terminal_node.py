"""A real terminal in the simulation: :class:`terminal.agent.Terminal` on a simulated link.

:class:`TerminalNode` builds the terminal exactly as ``canteen-terminal run`` does, but
hands its sync agent the simulated network, HTTP, monotonic clock and boot id
(:class:`terminal.sync_link.Transport`) and never starts the sync thread: :meth:`step` runs one
round of it. What the diners were told is kept as the chaos run keeps it — ``approved`` and
``recovered`` events with the sale's uuid and the true time it was said — for the audit.

**Crash.** :meth:`crash` drops the connection (the broker sends the will) and closes both
SQLite connections without committing. A **power cut** also takes a new boot id (the
stored clock offset no longer counts); a terminal without a real-time clock (``rtc=False``,
``--wild-clocks``) boots with the time it had at the cut (fake-hwclock) until NTP steps it. Crash points
(:class:`~simulator.vopr.fuse.Fuse`): inside the tap's statements, the journal's commit
among them (``tap_sql``); after the sale is journaled, before the display says 支付成功
(``display``); after the display, before the sale is marked announced (``announce``);
inside the sync agent's statements — applying a delta or a snapshot, settling acks
(``sync_sql``). On the next start :meth:`Terminal.recover` announces what was journaled and
never announced, as it does after a real power cut.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hardware.display import MemoryDisplay, Screen
from server.registry.terminals import TerminalCredentials
from shared.protocol import Sale
from simulator.vopr.clock import NodeClock, SimTime
from simulator.vopr.fuse import Fuse, SimCrash, crash_site
from simulator.vopr.network import SimBroker, SimLink
from terminal.agent import Terminal
from terminal.authorize import Decision, TapRequest
from terminal.config import TerminalConfig
from terminal.server_http import Send
from terminal.sync_link import Transport

TerminalFactory = Callable[..., Terminal]
BOOT_MS = 20_000  # a Pi's boot
# the real code's functions a crash is reported in (the innermost on the stack)
CRASH_SITES = (
    "recover",
    "tap",
    "record_sale",
    "mark_announced",
    "record_decline",
    "apply_changes",
    "apply_results",
    "_send_outbox",
    "_catch_up",
    "send_status",
    "set_metas",
)


@dataclass(frozen=True)
class Told:
    """One thing a diner was told about a sale: approved at the tap, or recovered at start."""

    event: str
    uuid: str
    seq: int
    seen_ms: int  # true time


class _Display(MemoryDisplay):
    """Shows nothing anyone reads (only the last screen is kept); a crash point before an approval."""

    def __init__(self, fuse: Fuse) -> None:
        super().__init__()
        self._fuse = fuse

    def show(self, screen: Screen) -> None:
        if screen.tone == "ok":
            self._fuse.tick("display")
        self.screens[:] = [screen]


class TerminalNode:
    def __init__(
        self,
        creds: TerminalCredentials,
        db_path: str,
        time: SimTime,
        broker: SimBroker,
        http: Send,
        *,
        clock_offset_ms: int = 0,
        rtc: bool = True,
        batch_size: int = 200,
        terminal: TerminalFactory = Terminal,
        link: Callable[..., SimLink] | None = None,
    ) -> None:
        self.creds = creds
        self.time = time
        self.broker = broker
        self.clock = NodeClock(time, clock_offset_ms)
        self.config = TerminalConfig(
            terminal_id=creds.terminal_id,
            canteen_id=creds.canteen_id,
            secret_hex=creds.secret_hex,
            server_public_key=creds.server_public_key,
            broker_url="mqtt://broker.sim:1883",
            server_url="http://server.sim",
            db_path=db_path,  # on the simulated disk (simulator.vopr.disk)
            display="memory",
            batch_size=batch_size,
        )
        self._http = http
        self._terminal = terminal
        self._link = link or broker.link
        self.told: list[Told] = []
        self.fuse = Fuse()
        self.up = False
        self.power_cycles = 0
        self.power_cut_next = False  # the armed crash, when it fires, is a power cut
        self.last_crash_where: str | None = None  # the real code's function it struck in
        self.on_power_cut: Callable[[], None] = lambda: None
        self._clock_at_cut: int | None = None
        self.rtc = rtc  # a real-time clock keeps the time through a power cut
        self.terminal: Terminal | None = None

    @property
    def terminal_id(self) -> str:
        return self.creds.terminal_id

    # --- life ---------------------------------------------------------------------------

    def start(self) -> TerminalNode:
        """Boot: open the store, announce what a crash left unannounced, connect. After a
        power cut the clock reads what it read at the cut (no real-time clock)."""
        self.fuse = Fuse()
        if self._clock_at_cut is not None:
            if not self.rtc:
                self.clock.offset_ms = self._clock_at_cut + BOOT_MS - self.time.now_ms
            self._clock_at_cut = None
            self.on_power_cut()
        transport = Transport(
            link=self._link,
            http_send=self._http,
            monotonic=self.time.monotonic_s,
            boot_id=f"{self.terminal_id}-boot-{self.power_cycles}",
        )
        self.terminal = self._terminal(
            self.config, self.clock, display=_Display(self.fuse), on_event=self._on_event, transport=transport
        )
        self.up = True
        self.guarded(self.terminal.recover)
        if self.up:
            self.terminal.sync.link.start()
        return self

    def crash(self, power_cut: bool | None = None, where: str | None = None) -> None:
        if not self.up or self.terminal is None:
            return
        self.up = False
        self.last_crash_where = where
        self.terminal.sync.link.crash()  # type: ignore[attr-defined]  # a SimLink
        self.terminal.store.close()  # an open transaction is rolled back
        self.terminal.sync.store.close()
        self.terminal = None
        if self.power_cut_next if power_cut is None else power_cut:
            self.power_cycles += 1
            self._clock_at_cut = self.clock.now_ms()
        self.power_cut_next = False

    def guarded(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run ``work``; an armed crash point that fires crashes the terminal (None)."""
        try:
            return work(*args)
        except SimCrash as exc:
            self.crash(where=crash_site(exc, CRASH_SITES))
        except sqlite3.OperationalError as exc:
            if self.fuse.fired is None:
                raise
            self.crash(where=crash_site(exc, CRASH_SITES))
        return None

    # --- work ---------------------------------------------------------------------------

    def tap(self, request: TapRequest) -> tuple[Decision, Sale | None] | None:
        """A diner taps; None when the terminal crashed during it (or is down)."""
        if not self.up or self.terminal is None:
            return None
        return self.guarded(self.terminal.tap, request)

    def step(self) -> None:
        if self.up and self.terminal is not None:
            self.guarded(self.terminal.sync.step)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in ("approved", "recovered"):
            self.told.append(Told(kind, event["uuid"], event["seq"], self.time.now_ms))
            if kind == "approved":
                self.fuse.tick("announce")  # told, not yet marked announced

    # --- the crash points ------------------------------------------------------------------

    def arm(self, point: str, after: int) -> None:
        if self.terminal is None:
            return
        if point == "tap_sql":
            self.fuse.arm_sql(self.terminal.store.conn, point, after)
        elif point == "sync_sql":
            self.fuse.arm_sql(self.terminal.sync.store.conn, point, after)
        else:
            self.fuse.arm(point, after)

    # --- what the audit reads -----------------------------------------------------------

    @property
    def db_path(self) -> str:
        return self.config.db_path

    def pending(self) -> int:
        """Sales in the outbox (unacknowledged)."""
        if self.terminal is None:
            return 0
        with self.fuse.quiet():
            return self.terminal.sync.store.pending_count()

    def in_sync(self) -> bool:
        if self.terminal is None:
            return False
        with self.fuse.quiet():
            return self.terminal.sync.in_sync

    def delta_version(self) -> int | None:
        if self.terminal is None:
            return None
        with self.fuse.quiet():
            return self.terminal.store.delta_version
