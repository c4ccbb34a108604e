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
