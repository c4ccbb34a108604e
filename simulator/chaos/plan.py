"""The chaos run's plan: who taps where and when, and which fault strikes when — all from
the seed.

:func:`build_plan` is a pure function of :class:`ChaosOptions`: the same seed gives the same
taps (time, terminal, tap line), the same faults (time, kind, target, duration, parameters)
and the same clock skew, so a failing seed can be run again and read. Real processes add
timing noise on top (a sale may be acknowledged a little earlier or later); the invariants
the audit checks must hold for every such run.

Fault kinds (``FAULT_KINDS``):

* ``partition_cut`` / ``partition_oneway`` / ``partition_blackhole`` — one terminal's
  network (MQTT and HTTP) through :class:`~simulator.harness.netproxy.NetProxy`, for a while;
* ``broker_restart`` — the MQTT broker stopped (``graceful``) or SIGKILLed, then started
  again on the same port with the same data folder;
* ``server_kill`` — ``canteen-server run`` SIGKILLed, restarted after a while;
* ``terminal_kill`` — a terminal process SIGKILLed in the middle of a burst of taps,
  restarted after a while;
* ``duplicate`` / ``reorder`` — real signed batches captured on the broker, published
  again (twice) or a run of them in reverse order;
* ``forged`` — a sale batch on a real terminal's topic signed with the wrong key, or from a
  terminal that does not exist;
* ``corrupted`` — a captured batch with a few bytes flipped;
* ``clock_skew`` — one terminal runs with its clock off (beyond the limit or within it);
* reversals — not a fault: after some taps the canteen's operator reverses the terminal's
  newest sale (``reverse`` lines, :data:`REVERSAL_P`); they meet every fault above (their
  batches are captured, copied, reordered and corrupted like the sales');
* ``node_kill`` (``--cluster`` only, instead of ``broker_restart``) — one of the three NATS
  nodes SIGKILLed, started again after a while with the same data folder; never two at once
  (JetStream keeps the MQTT sessions and retained messages with 2 of 3 nodes);
* ``server_kill`` in a cluster run targets one of the two server processes;
* ``pg_restart`` (``--cluster`` only) — PostgreSQL stopped (``fast``: clients cut off;
  ``immediate``: a crash, recovered from the WAL at the start), started again after a while
  on the same data folder and port;
* ``compromised`` — a real terminal's stolen key signs implausible sales (``variants`` of
  :data:`COMPROMISED_VARIANTS`: far over the limit, a meal at a wrong price, a shop item at a
  wrong price, dated days ahead, a huge sale on another unit's card) published on that
  terminal's sales topic with sequence numbers its own never reach. The server must
  quarantine every one and apply none.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = (
    "partition_cut",
    "partition_oneway",
    "partition_blackhole",
    "broker_restart",
    "server_kill",
    "terminal_kill",
    "duplicate",
    "reorder",
    "forged",
    "corrupted",
    "clock_skew",
    "compromised",
)
# a cluster run (``--cluster``: 3 NATS nodes, 2 server processes, PostgreSQL) has these
# instead of ``broker_restart``
CLUSTER_FAULT_KINDS = ("node_kill", "pg_restart")
CLUSTER_NODES, CLUSTER_SERVERS = 3, 2
COMPROMISED_VARIANTS = ("too_large", "meal_price", "item_price", "future", "other_unit_card")
# how many of each per minute of workload (each kind at least once per run)
RATE_PER_MIN = {
    "partition": 2.0,
    "broker_restart": 0.7,
    "server_kill": 0.7,
    "terminal_kill": 1.0,
    "duplicate": 2.0,
    "reorder": 1.0,
    "forged": 2.0,
    "corrupted": 2.0,
    "compromised": 1.0,
    "node_kill": 0.7,
    "pg_restart": 0.5,
}
MEAN_TAP_GAP_S = 10.0  # per diner
DOUBLE_TAP_P = 0.08  # a cloned card: the same card at several terminals within 300 ms
# reversals (冲正): after this share of the taps, the canteen's operator reverses the
# terminal's newest sale a moment later (a ``reverse`` line on its stdin)
REVERSAL_P = 0.12
OPERATOR_CARD, OPERATOR_PIN = "OP-CHAOS", "246810"  # every chaos canteen's operator


@dataclass(frozen=True)
class ChaosOptions:
    seed: int = 1
    terminals: int = 3
    diners: int = 20
    minutes: float = 0.5
    broker: str = "auto"  # mosquitto | embedded | auto (ignored by a cluster run)
    cluster: bool = False  # 3 NATS nodes, 2 server processes, PostgreSQL

    def __post_init__(self) -> None:
        if self.terminals < 2:
            raise ValueError("chaos needs at least 2 terminals")
        if self.diners < 1 or self.minutes <= 0:
            raise ValueError("diners must be ≥ 1 and minutes > 0")


@dataclass(frozen=True)
class Tap:
    at_s: float
    terminal: int  # index into the terminals
    line: str  # what the card reader (stdin) receives
    card_id: str


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    target: int | None = None  # terminal index, where it has one
    duration_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        who = "" if self.target is None else f" T{self.target + 1}"
        extra = "".join(
            f" {k}={len(v) if isinstance(v, list) else v}" for k, v in sorted(self.params.items())
        )
        dur = f" for {self.duration_s:.1f}s" if self.duration_s else ""
        return f"{self.at_s:7.2f}s {self.kind}{who}{dur}{extra}"


@dataclass(frozen=True)
class Plan:
    options: ChaosOptions
    workload_s: float
    taps: tuple[Tap, ...]
    faults: tuple[Fault, ...]
    clock_skew: dict[int, int]  # terminal index -> clock offset (ms)

    def fault_counts(self) -> dict[str, int]:
        kinds = FAULT_KINDS
        if self.options.cluster:
            kinds = tuple(k for k in FAULT_KINDS if k != "broker_restart") + CLUSTER_FAULT_KINDS
        counts = {k: 0 for k in kinds}
        for f in self.faults:
            counts[f.kind] += 1
        counts["clock_skew"] = len(self.clock_skew)
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "options": asdict(self.options),
            "workload_s": self.workload_s,
            "taps": len(self.taps),
            "reversals": sum(t.line.startswith("reverse ") for t in self.taps),
            "clock_skew_ms": {f"T{i + 1}": v for i, v in self.clock_skew.items()},
            "faults": [f.describe().strip() for f in self.faults],
        }


def build_plan(opts: ChaosOptions, cards: list[str]) -> Plan:
    """The whole run, decided by ``opts.seed``. ``cards``: the diners' card ids."""
    rng = random.Random(opts.seed)
    workload_s = opts.minutes * 60.0
    taps = _taps(rng, opts, cards, workload_s)
    return Plan(
        options=opts,
        workload_s=workload_s,
        taps=tuple(
            sorted(
                taps + _reversals(random.Random(opts.seed ^ 0x4E5E), taps, workload_s),
                key=lambda tap: (tap.at_s, tap.terminal, tap.card_id),
            )
        ),
        faults=tuple(sorted(_faults(rng, opts, cards, workload_s), key=lambda f: (f.at_s, f.kind))),
        clock_skew=_skew(rng, opts),
    )


def _tap_line(rng: random.Random, card: str) -> str:
    r = rng.random()
    if r < 0.5:
        return card  # a meal
    if r < 0.9:
        return f"{card} shop {rng.choice([150, 200, 350, 500, 800, 1200, 2000, 3500])}"  # typed amount
    return f"{card} shop tissue*{rng.randint(1, 3)} water"  # a basket


def _taps(rng: random.Random, opts: ChaosOptions, cards: list[str], workload_s: float) -> list[Tap]:
    taps: list[Tap] = []
    for card in cards[: opts.diners]:
        home = rng.randrange(opts.terminals)
        t = rng.expovariate(1 / MEAN_TAP_GAP_S) * 0.5
        while t < workload_s:
            line = _tap_line(rng, card)
            if rng.random() < DOUBLE_TAP_P:
                # a cloned card presented at several terminals at (nearly) the same time
                for term in rng.sample(range(opts.terminals), k=min(opts.terminals, rng.randint(2, 3))):
                    taps.append(Tap(round(t + rng.uniform(0, 0.3), 3), term, line, card))
            else:
                term = home if rng.random() < 0.7 else rng.randrange(opts.terminals)
                taps.append(Tap(round(t, 3), term, line, card))
            t += max(1.0, rng.expovariate(1 / MEAN_TAP_GAP_S))
    taps.sort(key=lambda tap: (tap.at_s, tap.terminal, tap.card_id))
    return taps


def _reversals(rng: random.Random, taps: list[Tap], workload_s: float) -> list[Tap]:
    """The operator's reversals, each a moment after a tap at the same terminal (its own
    random stream: the taps and faults of a seed stay what they were)."""
    out = [
        Tap(
            round(t.at_s + rng.uniform(0.5, 4.0), 3),
            t.terminal,
            f"reverse {OPERATOR_CARD} {OPERATOR_PIN} last",
            OPERATOR_CARD,
        )
        for t in taps
        if rng.random() < REVERSAL_P and t.at_s + 4.0 < workload_s
    ]
    return sorted(out, key=lambda tap: (tap.at_s, tap.terminal))


def _slots(rng: random.Random, n: int, workload_s: float, max_dur: float) -> list[tuple[float, float]]:
    """``n`` non-overlapping (start, duration) windows inside the workload."""
    lo, hi = 0.05 * workload_s, 0.85 * workload_s
    width = (hi - lo) / n
    out = []
    for i in range(n):
        dur = min(max_dur, max(0.3, rng.uniform(0.3, 0.8) * width))
        start = lo + i * width + rng.uniform(0, max(0.0, width - dur))
        out.append((round(start, 2), round(dur, 2)))
    return out


def _count(rng: random.Random, kind: str, minutes: float) -> int:
    expected = RATE_PER_MIN[kind] * minutes
    return max(1, int(expected) + (1 if rng.random() < expected - int(expected) else 0))


def _faults(rng: random.Random, opts: ChaosOptions, cards: list[str], workload_s: float) -> list[Fault]:
    placed: list[Fault] = []
    # partitions: spread over the terminals, non-overlapping windows per terminal
    n_part = _count(rng, "partition", opts.minutes)
    per_terminal = [
        n_part // opts.terminals + (1 if t < n_part % opts.terminals else 0) for t in range(opts.terminals)
    ]
    for target, n in enumerate(per_terminal):
        if n:
            for start, dur in _slots(rng, n, workload_s, 8.0):
                kind = rng.choice(["partition_cut", "partition_oneway", "partition_blackhole"])
                placed.append(Fault(start, kind, target, dur))
    if opts.cluster:
        placed += _cluster_faults(random.Random(opts.seed ^ 0xC1A5), opts, workload_s)
    else:
        for start, dur in _slots(rng, _count(rng, "broker_restart", opts.minutes), workload_s, 3.0):
            how = rng.choice(["graceful", "sigkill"])
            placed.append(Fault(start, "broker_restart", None, dur, {"how": how}))
        for start, dur in _slots(rng, _count(rng, "server_kill", opts.minutes), workload_s, 4.0):
            placed.append(Fault(start, "server_kill", None, dur))
    kills = _slots(rng, _count(rng, "terminal_kill", opts.minutes), workload_s, 3.0)
    for i, (start, dur) in enumerate(kills):
        burst = [_tap_line(rng, rng.choice(cards[: opts.diners])) for _ in range(rng.randint(3, 10))]
        params = {"burst": burst, "after_ms": rng.randint(0, 60)}
        placed.append(Fault(start, "terminal_kill", i % opts.terminals, dur, params))
    for kind in ("duplicate", "reorder", "forged", "corrupted"):
        for _ in range(_count(rng, kind, opts.minutes)):
            at = round(rng.uniform(0.1, 0.95) * workload_s, 2)
            params: dict[str, Any] = {"pick": round(rng.random(), 4)}
            if kind == "reorder":
                params["run"] = rng.randint(2, 5)
            elif kind == "forged":
                params["as"] = rng.choice(["wrong_key", "unknown_terminal"])
                params["target"] = rng.randrange(opts.terminals)
                params["card"] = rng.choice(cards[: opts.diners])
                params["amount_fen"] = rng.choice([100, 1200, 4999])
            elif kind == "corrupted":
                params["flips"] = rng.randint(1, 3)
                params["where"] = round(rng.random(), 4)
            placed.append(Fault(at, kind, None, 0.0, params))
    # drawn last, so the plans of the faults above stay what they were for every seed
    for _ in range(_count(rng, "compromised", opts.minutes)):
        at = round(rng.uniform(0.1, 0.95) * workload_s, 2)
        variants = rng.sample(COMPROMISED_VARIANTS, k=rng.randint(2, len(COMPROMISED_VARIANTS)))
        params = {
            "target": rng.randrange(opts.terminals),
            "variants": sorted(variants, key=COMPROMISED_VARIANTS.index),
            "card": rng.choice(cards[: opts.diners]),
            "other_pick": round(rng.random(), 4),  # which of another unit's cards
            "meal_fen": rng.choice([1, 999, 1300, 2400]),  # the meal costs 1200 / visitors 1500
            "item_fen": rng.choice([1, 100, 3500]),  # tissue costs 350
            "days_ahead": rng.randint(1, 30),
        }
        placed.append(Fault(at, "compromised", None, 0.0, params))
    return placed


def _cluster_faults(rng: random.Random, opts: ChaosOptions, workload_s: float) -> list[Fault]:
    """Node kills, server-process kills and PostgreSQL restarts (their own random stream).
    Each kind's windows never overlap: one node of three down at a time (a quorum stays),
    one server process of two."""
    out: list[Fault] = []
    first_node, first_server = rng.randrange(CLUSTER_NODES), rng.randrange(CLUSTER_SERVERS)
    for i, (start, dur) in enumerate(_slots(rng, _count(rng, "node_kill", opts.minutes), workload_s, 15.0)):
        out.append(Fault(start, "node_kill", None, dur, {"node": (first_node + i) % CLUSTER_NODES}))
    for i, (start, dur) in enumerate(_slots(rng, _count(rng, "server_kill", opts.minutes), workload_s, 6.0)):
        out.append(Fault(start, "server_kill", None, dur, {"server": (first_server + i) % CLUSTER_SERVERS}))
    for start, dur in _slots(rng, _count(rng, "pg_restart", opts.minutes), workload_s, 5.0):
        out.append(Fault(start, "pg_restart", None, dur, {"how": rng.choice(["fast", "immediate"])}))
    return out


def _skew(rng: random.Random, opts: ChaosOptions) -> dict[int, int]:
    """One terminal with a wrong clock: beyond the 5-minute limit, or within it."""
    victim = rng.randrange(opts.terminals)
    sign = rng.choice([-1, 1])
    if rng.random() < 0.6:
        return {victim: sign * rng.randint(6 * 60_000, 30 * 60_000)}
    return {victim: sign * rng.randint(10_000, 120_000)}
