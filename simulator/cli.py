"""``canteen-sim``: the demo (and, later, the city, scenario replay and chaos runs)."""

from __future__ import annotations

import json
import sys

import click

from simulator.demo import DemoOptions, render, run_demo


@click.group()
def main() -> None:
    """Canteen one-card simulator (食堂一卡通 仿真)."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--diners", default=50, show_default=True)
@click.option("--seconds", "rush_s", default=20.0, show_default=True, help="Length of the lunch rush (real seconds).")
@click.option("--seed", default=7, show_default=True)
@click.option("--broker", type=click.Choice(["embedded", "mosquitto", "auto"]), default="embedded", show_default=True)
def demo(as_json: bool, diners: int, rush_s: float, seed: int, broker: str) -> None:
    """One lunch: 3 terminals, 2 canteens, an outage, then drain and audit."""
    result = run_demo(DemoOptions(diners=diners, rush_s=rush_s, seed=seed, broker=broker))
    click.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else render(result))
    ok = result["applied"] == result["approved"] and result["pending"] == 0 and result["ledger_sum_fen"] == 0 and result["mismatches"] == 0
    sys.exit(0 if ok else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--broker", type=click.Choice(["embedded", "mosquitto", "auto"]), default="embedded", show_default=True)
def payments(as_json: bool, broker: str) -> None:
    """Card (NFC, SUN), QR code and digital RMB through their real device paths, with faults."""
    from simulator.payments_demo import render_payments, run_payments_demo

    result = run_payments_demo(broker)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else render_payments(result))
    audit = result["audit"]
    sys.exit(0 if audit["approved"] == audit["applied"] and audit["mismatches"] == 0 and result["drained"] else 1)


@main.command()
@click.option("--seed", default=1, show_default=True, type=int, help="Decides the taps, the faults and their parameters.")
@click.option("--terminals", default=3, show_default=True, type=click.IntRange(2, 32))
@click.option("--diners", default=20, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--minutes", default=0.5, show_default=True, type=click.FloatRange(0.05, 600), help="Length of the workload (wall clock).")
@click.option("--broker", type=click.Choice(["mosquitto", "embedded", "auto"]), default="auto", show_default=True)
@click.option("--keep", is_flag=True, help="Keep the run's folder (logs, databases) even when it passes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (progress goes to stderr).")
def chaos(seed: int, terminals: int, diners: int, minutes: float, broker: str, keep: bool, as_json: bool) -> None:
    """Real processes under faults (partitions, broker/server/terminal kills, copies, forgeries,
    clock skew), then drain and audit: exit 0 only if no fen was lost or counted twice."""
    from simulator.chaos import render as render_chaos
    from simulator.chaos import run_chaos
    from simulator.chaos_plan import ChaosOptions

    _quiet()
    opts = ChaosOptions(seed=seed, terminals=terminals, diners=diners, minutes=minutes, broker=broker)
    result = run_chaos(opts, say=lambda line: click.echo(line, err=as_json), keep=keep)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else render_chaos(result))
    sys.exit(0 if result["ok"] else 1)


@main.command("chaos-sweep")
@click.option("--seeds", default=20, show_default=True, type=click.IntRange(1, 10_000), help="How many seeds.")
@click.option("--first-seed", default=1, show_default=True, type=int)
@click.option("--terminals", default=4, show_default=True, type=click.IntRange(2, 32))
@click.option("--diners", default=30, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--minutes", default=1.0, show_default=True, type=click.FloatRange(0.05, 600))
@click.option("--broker", type=click.Choice(["mosquitto", "embedded", "auto"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def chaos_sweep(seeds: int, first_seed: int, terminals: int, diners: int, minutes: float, broker: str, as_json: bool) -> None:
    """Chaos runs over many seeds; reports the seeds tried and failed, exit 1 if any failed."""
    from simulator.chaos import run_sweep
    from simulator.chaos_plan import ChaosOptions

    _quiet()
    base = ChaosOptions(seed=first_seed, terminals=terminals, diners=diners, minutes=minutes, broker=broker)
    summary = run_sweep(list(range(first_seed, first_seed + seeds)), base, say=lambda line: click.echo(line, err=as_json))
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        click.echo(
            f"seeds tried {len(summary['seeds_tried'])}, failed {len(summary['seeds_failed'])}"
            f"{' ' + str(summary['seeds_failed']) if summary['seeds_failed'] else ''}; "
            f"faults {summary['faults_total']}, approved {summary['approved']}, applied {summary['applied']}, "
            f"lost {summary['lost']}, double {summary['double_applied']}"
        )
    sys.exit(1 if summary["seeds_failed"] else 0)


def _quiet() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("shared.mqtt").setLevel(logging.ERROR)
