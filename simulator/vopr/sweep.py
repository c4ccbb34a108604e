"""Many seeds, and a failing seed made short.

:func:`run_sweep` runs one seed after another — ``jobs`` at a time, each in its own process —
and sums them up (``make vopr``); :func:`shrink` replays shorter prefixes of a failing run
(the same seed, the workload cut at an earlier step, then healed, drained and checked) to
find a short one that still fails.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from typing import Any

from simulator.vopr.kinds import EVENT_KINDS, FAULT_KINDS, OPTIONAL_KINDS
from simulator.vopr.options import VoprOptions
from simulator.vopr.run import describe, run_vopr


def _one(opts: VoprOptions) -> tuple[dict[str, Any], dict[str, float]]:
    timing: dict[str, float] = {}
    return run_vopr(opts, timing), timing


def run_sweep(
    seeds: list[int], base: VoprOptions, say: Callable[[str], None] = lambda line: None, jobs: int = 1
) -> dict[str, Any]:
    """One run per seed (``jobs`` at a time, each in its own process), reported in seed
    order; the summary of all (``make vopr``). Every fault kind and event kind is counted,
    zero included, and those that never struck are listed."""
    failed: list[dict[str, Any]] = []
    faults: Counter[str] = Counter()
    events: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    checks: Counter[str] = Counter()  # how often the checks ran (and held, unless a seed failed)
    cpu_s = 0.0  # the runs' own CPU time, summed over the processes
    started = time.perf_counter()
    runs = [replace(base, seed=seed) for seed in seeds]
    if jobs > 1:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
        outcomes: Iterator[tuple[dict[str, Any], dict[str, float]]] = pool.map(_one, runs)
    else:
        pool, outcomes = None, map(_one, runs)
    try:
        for opts, (result, timing) in zip(runs, outcomes, strict=True):
            faults.update(result["faults"])
            events.update(result["events"])
            for key in ("sales", "approved", "declined", "steps"):
                totals[key] += result[key]
            checks.update(result["checks"])
            cpu_s += timing["cpu_s"]
            checks["final_audits"] += result["audit"] is not None
            if result["audit"]:
                for key in ("applied", "offline_sales", "quarantined"):
                    totals[key] += result["audit"][key]
            if not result["ok"]:
                failed.append({"seed": opts.seed, **result["failure"]})
            say(
                f"seed {opts.seed}: {'ok' if result['ok'] else 'FAILED ' + describe(result['failure'])} — "
                f"{result['sales']:,} sales, {result['approved']:,} approved, "
                f"{timing['sales_per_s']:,.0f} sales/s, digest {result['digest'][:16]}"
            )
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    elapsed = time.perf_counter() - started
    return {
        "options": {k: v for k, v in asdict(base).items() if k != "seed"},
        "seeds_tried": seeds,
        "seeds_failed": failed,
        **{
            k: totals[k]
            for k in ("sales", "approved", "declined", "applied", "offline_sales", "quarantined", "steps")
        },
        "faults": {k: faults[k] for k in FAULT_KINDS},
        "checks": dict(checks),
        "events": {k: events[k] for k in EVENT_KINDS},
        "never_struck": [
            k
            for k in (*FAULT_KINDS, *EVENT_KINDS)
            if not (faults[k] or events[k]) and k not in OPTIONAL_KINDS
        ],
        "jobs": jobs,
        "elapsed_s": round(elapsed, 1),
        "sales_per_s": round(totals["sales"] / elapsed) if elapsed else 0,
        "cpu_s": round(cpu_s, 1),
        "sales_per_cpu_s": round(totals["sales"] / cpu_s) if cpu_s else 0,
    }


def shrink(
    opts: VoprOptions, failing_step: int, say: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """The shortest prefix of a failing run that still fails: bisect the step the workload
    is cut at (a prefix is healed, drained and checked like a whole run). Failures need not
    be monotonic in the prefix; bisecting finds a short one, not always the very shortest."""
    lo, hi = 0, failing_step  # a prefix of `hi` steps fails; of `lo` steps is not known to
    best: dict[str, Any] | None = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        result = run_vopr(replace(opts, steps=mid))
        say(
            f"  prefix of {mid:,} steps: "
            + ("passes" if result["ok"] else "fails: " + describe(result["failure"]))
        )
        if result["ok"]:
            lo = mid
        else:
            hi, best = mid, result
    if best is None:
        best = run_vopr(replace(opts, steps=hi))
    return {"steps": hi, "result": best}
