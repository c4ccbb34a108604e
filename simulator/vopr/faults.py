"""What strikes when: the seed's faults, drawn step by step, and their ends.

Each step :meth:`Faults.step` first ends what is due (a partition heals, a link turns
clean again, the broker or a crashed node comes back), then draws new faults, each kind
with its own chance per step (:data:`RATES`):

* ``lossy_link`` — one link (a terminal's or the server's) loses, duplicates and stalls
  messages for a while; jitter reorders them (``network`` counts each message so treated);
* ``partition_terminal`` / ``partition_all`` / ``partition_server`` — one terminal, every
  terminal, or the server cut off from the broker (and the terminals from HTTP) for a
  while: seconds, or for a third of single-terminal cuts, hours across meal sessions;
* ``broker_restart`` — every message in flight dropped, every connection reset;
* ``server_crash`` — armed at a crash point of the server (inside the ingest transaction or
  its commit, between the commit and the acks, while publishing deltas, inside a clerk's
  job) or now; restarted after a while. Counted where it fired;
* ``terminal_crash`` — armed at a crash point of a terminal (inside a tap's statements or
  the journal commit, after journaling before the display, after the display before
  announcing, inside the sync agent: applying a delta, settling acks) or now; a third are
  power cuts (a new boot id; with ``wild_clocks``, terminals without a real-time clock: the
  clock set back to the moment of the cut, NTP steps it right once the network is back);
  restarted after a while;
* ``clock_jump`` — a terminal's clock steps (an NTP correction), staying within the
  limits the terminals are given (with ``wild_clocks``, sometimes far beyond them);
* ``compromised`` — a thief with a terminal's key publishes implausible sales on its topic.

Every fault drawn is counted in ``counts`` under its kind (crashes under the point where
they fired, once they have).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.vopr.model import Sim
from simulator.vopr.network import CLEAN, LinkFaults
from simulator.vopr.prng import Prng

# chance per step (a step is TICK_MS of simulated time)
RATES = {
    "lossy_link": 0.01,
    "partition_terminal": 0.004,
    "partition_all": 0.0012,
    "partition_server": 0.0012,
    "broker_restart": 0.0012,
    "server_crash": 0.004,
    "terminal_crash": 0.008,
    "clock_jump": 0.003,
    "compromised": 0.0015,
}
SERVER_POINTS = ("ingest_sql", "ack_publish", "delta_publish", "admin_sql", "now")
SERVER_WEIGHTS = (30, 40, 10, 10, 10)
TERMINAL_POINTS = ("tap_sql", "display", "announce", "sync_sql", "now")
TERMINAL_WEIGHTS = (25, 20, 15, 25, 15)
# a crash inside SQL strikes within this many virtual-machine instructions of being armed:
# about an ingest transaction of a few dozen sales, a tap or a delta on a terminal
SERVER_SQL_INSTRUCTIONS = 40_000
TERMINAL_SQL_INSTRUCTIONS = 4_000
MAX_CLOCK_DRIFT_MS = 120_000  # NTP steps keep a terminal's clock within this of true time
HOUR_MS = 3_600_000


@dataclass(order=True)
class _Due:
    at_ms: int
    n: int
    what: Callable[[], None] = field(compare=False)


class Faults:
    def __init__(self, run: Sim, rng: Prng, *, enabled: bool = True, scale: float = 1.0) -> None:
        self.run = run
        self.rng = rng
        self.enabled = enabled
        self.scale = scale
        self.counts: Counter[str] = Counter()
        self._due: list[_Due] = []
        self._n = 0
        self._server_down_until: int | None = None
        self._terminal_down_until: dict[int, int] = {}
        self._ntp_pending: set[int] = set()

    # --- scheduling ---------------------------------------------------------------------

    def later(self, delay_ms: int, what: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self._due, _Due(self.run.time.now_ms + max(delay_ms, 0), self._n, what))

    def _end_due(self) -> None:
        now = self.run.time.now_ms
        while self._due and self._due[0].at_ms <= now:
            heapq.heappop(self._due).what()

    def step(self) -> None:
        self._end_due()
        self._restart_crashed()
        self._ntp()
        if not self.enabled:
            return
        r, s = self.rng, self.scale
        for kind, rate in RATES.items():
            if r.chance(rate * s):
                getattr(self, f"_{kind}")()

    def heal_all(self) -> None:
        """The end of the run: every fault ends now and nothing new strikes."""
        self.enabled = False
        run = self.run
        for _ in range(len(self._due)):
            heapq.heappop(self._due).what()
        for client_id in list(run.broker.links):
            run.broker.heal(client_id)
            run.broker.set_faults(client_id, CLEAN)
        if not run.broker.up:
            run.broker.come_up()
        run.server.fuse.disarm()
        for node in run.nodes:
            node.fuse.disarm()
        self._server_down_until = run.time.now_ms
        self._terminal_down_until = {i: run.time.now_ms for i, n in enumerate(run.nodes) if not n.up}

    # --- ends: nodes come back ----------------------------------------------------------

    def _restart_crashed(self) -> None:
        run, now = self.run, self.run.time.now_ms
        server = run.server
        if not server.up:
            if self._server_down_until is None:
                self._count_crash("server_crash", server.fuse.fired)
                self._server_down_until = now + self.rng.between(1_000, 30_000)
            elif now >= self._server_down_until:
                self._server_down_until = None
                server.start()
        for i, node in enumerate(run.nodes):
            if node.up:
                continue
            until = self._terminal_down_until.get(i)
            if until is None:
                self._count_crash("terminal_crash", node.fuse.fired, node.last_crash_where)
                self._terminal_down_until[i] = now + self.rng.between(1_000, 600_000)
            elif now >= until:
                del self._terminal_down_until[i]
                node.start()

    def _count_crash(self, kind: str, point: str | None, where: str | None = None) -> None:
        self.counts[f"{kind}_{point or 'now'}"] += 1
        if where:
            self.counts[f"{kind}_in_{where}"] += 1

    def _ntp(self) -> None:
        """A power-cut terminal's clock, set back at boot, is stepped right once it is online."""
        for i in sorted(self._ntp_pending):
            node = self.run.nodes[i]
            if node.up and node.terminal is not None and node.terminal.sync.link.connected:
                self._ntp_pending.discard(i)
                delay = self.rng.between(0, 60_000)
                self.later(
                    delay, lambda node=node: node.clock.jump(self._small_offset() - node.clock.offset_ms)
                )

    def _small_offset(self) -> int:
        return self.rng.between(-2_000, 2_000)

    # --- the faults ---------------------------------------------------------------------

    def _lossy_link(self) -> None:
        run, r = self.run, self.rng
        ids = ["server"] + [n.terminal_id for n in run.nodes]
        client = r.pick(ids)
        faults = LinkFaults(
            loss_p=r.uniform(0.01, 0.3),
            dup_p=r.uniform(0.01, 0.2),
            delay_ms=(1, r.between(50, 1_500)),
            stall_p=r.uniform(0.0, 0.1),
        )
        run.broker.set_faults(client, faults)
        self.counts["lossy_link"] += 1
        self.later(r.between(2_000, 90_000), lambda: run.broker.set_faults(client, CLEAN))

    def _partition(self, clients: list[str], duration_ms: int) -> None:
        broker = self.run.broker
        for c in clients:
            broker.partition(c)
        self.later(duration_ms, lambda: [broker.heal(c) for c in clients])

    def _partition_terminal(self) -> None:
        r = self.rng
        node = r.pick(self.run.nodes)
        long = r.chance(0.3)
        self._partition(
            [node.terminal_id], r.between(10 * 60_000, 30 * HOUR_MS) if long else r.between(1_000, 90_000)
        )
        self.counts["partition_terminal_long" if long else "partition_terminal"] += 1

    def partition_one_terminal(self, duration_ms: int) -> None:
        """A terminal cut off for ``duration_ms`` from now (the workload's: one left off over
        New Year, so that the year's closes find it behind); nothing when faults are off."""
        if not self.enabled:
            return
        self._partition([self.rng.pick(self.run.nodes).terminal_id], duration_ms)
        self.counts["partition_terminal_long"] += 1

    def _partition_all(self) -> None:
        self._partition([n.terminal_id for n in self.run.nodes], self.rng.between(2_000, 120_000))
        self.counts["partition_all"] += 1

    def _partition_server(self) -> None:
        self._partition(["server"], self.rng.between(2_000, 60_000))
        self.counts["partition_server"] += 1

    def _broker_restart(self) -> None:
        broker = self.run.broker
        if not broker.up:
            return
        broker.go_down()
        self.counts["broker_restart"] += 1
        self.later(self.rng.between(500, 20_000), broker.come_up)

    def _server_crash(self) -> None:
        server = self.run.server
        if not server.up or server.fuse.armed:
            return
        point = self.rng.pick_weighted(SERVER_POINTS, SERVER_WEIGHTS)
        if point == "now":
            server.crash()
        elif point == "ingest_sql":
            server.fuse.arm_sql(server.ingest_conn, point, self.rng.between(1, SERVER_SQL_INSTRUCTIONS))
        elif point == "admin_sql":
            server.fuse.arm_sql(server.admin_conn, point, self.rng.between(1, SERVER_SQL_INSTRUCTIONS))
        else:
            server.fuse.arm(point, self.rng.between(1, 6))
        self.counts[f"server_crash_armed_{point}"] += 1

    def _terminal_crash(self) -> None:
        r = self.rng
        i = r.between(0, len(self.run.nodes) - 1)
        node = self.run.nodes[i]
        if not node.up or node.fuse.armed:
            return
        point = r.pick_weighted(TERMINAL_POINTS, TERMINAL_WEIGHTS)
        node.power_cut_next = r.chance(0.33)
        if point == "now":
            node.crash(power_cut=node.power_cut_next)
        else:
            node.arm(point, r.between(1, TERMINAL_SQL_INSTRUCTIONS) if point.endswith("_sql") else 1)
        self.counts[f"terminal_crash_armed_{point}"] += 1

    def on_power_cut(self, index: int) -> None:
        """Called by a terminal node when it boots after a power cut. Without a real-time
        clock its clock reads the moment of the cut (fake-hwclock); NTP steps it right once
        the terminal is online."""
        self.counts["terminal_power_cut"] += 1
        if not self.run.nodes[index].rtc:
            self.counts["clock_set_back_at_boot"] += 1
            self._ntp_pending.add(index)

    def _clock_jump(self) -> None:
        r = self.rng
        node = r.pick(self.run.nodes)
        if self.run.opts.wild_clocks and r.chance(0.3):  # a clock stepped far beyond the limit
            node.clock.jump(r.pick([-1, 1]) * r.between(6 * 60_000, 2 * HOUR_MS))
            self.counts["clock_jump_wild"] += 1
            return
        step = r.between(-60_000, 60_000)
        target = max(-MAX_CLOCK_DRIFT_MS, min(MAX_CLOCK_DRIFT_MS, node.clock.offset_ms + step))
        node.clock.jump(target - node.clock.offset_ms)
        self.counts["clock_jump"] += 1

    def _compromised(self) -> None:
        if self.run.thief.steal(self.rng):
            self.counts["compromised"] += 1
