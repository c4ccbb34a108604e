"""``canteen-sim vopr`` for a person: one run, a sweep, a shrunk failure."""

from __future__ import annotations

from typing import Any

from simulator.vopr.options import VoprOptions
from simulator.vopr.run import describe


def replay_command(opts: VoprOptions, steps: int | None = None) -> str:
    parts = [f"canteen-sim vopr --seed {opts.seed} --sales {opts.sales} --terminals {opts.terminals}"]
    if opts.diners_per_terminal != VoprOptions.diners_per_terminal:
        parts.append(f"--diners-per-terminal {opts.diners_per_terminal}")
    if opts.fault_scale != VoprOptions.fault_scale:
        parts.append(f"--fault-scale {opts.fault_scale}")
    if opts.plant:
        parts.append(f"--plant {opts.plant}")
    if not opts.faults:
        parts.append("--no-faults")
    if opts.wild_clocks:
        parts.append("--wild-clocks")
    if steps is not None:
        parts.append(f"--steps {steps}")
    return " ".join(parts)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items() if v) or "none"


def render(result: dict[str, Any], opts: VoprOptions) -> str:
    head = f"vopr seed {result['seed']}: " + (
        "ok" if result["ok"] else f"FAILED {describe(result['failure'])}"
    )
    lines = [
        head,
        f"  {result['sales']:,} sales ({result['approved']:,} approved, {result['declined']:,} declined) "
        f"on {result['terminals']} terminals, {result['diners']} diners; {result['steps']:,} steps, "
        f"{result['simulated_days']} simulated days"
        + (f"; planted bug: {result['plant']}" if result["plant"] else ""),
        f"  faults: {_counts(result['faults'])}",
        f"  business: {_counts(result['events'])}",
        f"  checks: after {result['checks']['after_steps']:,} steps, "
        f"the books {result['checks']['books']} times",
    ]
    audit = result["audit"]
    if audit:
        lines.append(
            f"  audit: applied {audit['applied']:,} (offline {audit['offline_sales']:,}), "
            f"lost {audit['lost']}, double {audit['double_applied']}, "
            f"ledger sum {audit['ledger_sum_fen']} fen, overdraft "
            f"{audit['overdraft_fen']} ≤ {audit['overdraft_bound_fen']} fen, stolen-key sales "
            f"{audit['compromised_sent']} quarantined {audit['quarantined']}"
        )
    lines.append(f"  digest {result['digest']}")
    if not result["ok"]:
        lines.append(f"  replay: {replay_command(opts)}")
    return "\n".join(lines)


def render_sweep(summary: dict[str, Any]) -> str:
    failed = summary["seeds_failed"]
    lines = [
        f"vopr: {len(summary['seeds_tried'])} seeds, {len(failed)} failed; {summary['sales']:,} sales "
        f"({summary['approved']:,} approved, {summary['applied']:,} applied, "
        f"{summary['offline_sales']:,} offline), {summary['quarantined']:,} stolen-key sales quarantined",
        f"  faults: {_counts(summary['faults'])}",
        f"  business: {_counts(summary['events'])}",
    ]
    checks = summary.get("checks") or {}
    if checks:
        lines.append(
            f"  checks: after {checks.get('after_steps', 0):,} steps, the books "
            f"{checks.get('books', 0):,} times, {checks.get('final_audits', 0):,} final audits"
        )
    if summary["never_struck"]:
        lines.append(f"  never struck: {', '.join(summary['never_struck'])}")
    for f in failed:
        lines.append(f"  seed {f['seed']} FAILED {describe(f)}")
    return "\n".join(lines)
