"""``canteen-sim``: the demo, the payments demo, scenario replay, the city, chaos and VOPR runs.

Every subcommand's code is imported up front: beyond the demo's (about 0.8 s, Flask and
numpy included) the others add about 0.15 s, most of it nfcpy for ``payments``, and none
pulls in dlib or OpenCV (only the hardware modules import those, lazily).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from simulator.chaos.plan import ChaosOptions
from simulator.chaos.run import render as render_chaos
from simulator.chaos.run import run_chaos, run_sweep
from simulator.city.render import consistent
from simulator.city.render import render as render_city
from simulator.city.run import CityOptions, run_city
from simulator.demo import DemoOptions, ok, run_demo
from simulator.demo import render as render_demo
from simulator.payments_demo import render_payments, run_payments_demo
from simulator.replay.check import check_result, invariant_failures
from simulator.replay.result import render as render_replay
from simulator.replay.run import run_scenario
from simulator.replay.scenario import ScenarioError, load
from simulator.vopr.kinds import OPTIONAL_KINDS
from simulator.vopr.options import VoprOptions
from simulator.vopr.planted import PLANTS
from simulator.vopr.render import render as render_vopr
from simulator.vopr.render import render_sweep, replay_command
from simulator.vopr.run import run_vopr
from simulator.vopr.sweep import run_sweep as run_vopr_sweep
from simulator.vopr.sweep import shrink

# the demos and the replay run in one process: the embedded broker by default
_in_process_broker = click.option(
    "--broker", type=click.Choice(["embedded", "mosquitto", "auto"]), default="embedded", show_default=True
)
# chaos runs real processes: Mosquitto when installed
_chaos_broker = click.option(
    "--broker", type=click.Choice(["mosquitto", "embedded", "auto"]), default="auto", show_default=True
)
_json_flag = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


@click.group()
def main() -> None:
    """Canteen one-card simulator (食堂一卡通 仿真)."""


@main.command()
@_json_flag
@click.option("--diners", default=300, show_default=True)
@click.option("--seed", default=7, show_default=True)
@_in_process_broker
def demo(as_json: bool, diners: int, seed: int, broker: str) -> None:
    """One working day of a small city (6 units, 3 canteens, 6 terminals): meals, shop,
    card/QR/face payments, an outage at one terminal, then settlement, year-end clearing
    and an audit of every terminal journal against the ledger."""
    result = run_demo(DemoOptions(diners=diners, seed=seed, broker=broker))
    _echo(result, as_json, lambda: render_demo(result))
    sys.exit(0 if ok(result) else 1)


@main.command()
@_json_flag
@_in_process_broker
def payments(as_json: bool, broker: str) -> None:
    """Card (NFC, SUN), QR code and digital RMB through their real device paths, with faults."""
    result = run_payments_demo(broker)
    _echo(result, as_json, lambda: render_payments(result))
    audit = result["audit"]
    sys.exit(
        0 if audit["approved"] == audit["applied"] and audit["mismatches"] == 0 and result["drained"] else 1
    )


@main.command()
@click.argument("scenario_path", metavar="SCENARIO.json", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the result).")
@click.option(
    "--check", is_flag=True, help="Also check the scenario's expect block; exit 1 if it does not hold."
)
@_in_process_broker
def replay(scenario_path: str, as_json: bool, check: bool, broker: str) -> None:
    """Run a scripted story on a simulated clock through real terminals, the real
    server and a broker, and print the final state.

    \b
    SCENARIO.json (yuan: at most two decimals; times: Asia/Shanghai):
    {"settings": {"year_end_refund_to": "unit" | "city_finance"},
     "units":    [{"name": "市财政局", "quarterly_standard_yuan": 300}],
     "canteens": [{"name": "财政局食堂", "unit": "市财政局", "operator": "湘味餐饮有限公司",
                   "self_operated": false, "terminals": 1,
                   "meals": {"lunch": ["11:30", "13:30", 12]},  (start, end, price)
                   "visitor_prices_yuan": {"lunch": 15}, "meal_limit": 1,
                   "quality_bands": [[90, 100], [80, 98], [0, 95]],
                   "items": [{"sku": "tissue", "price_yuan": 3.5, "reference_price_yuan": 4}],
                   "risk": {"offline_allowance_yuan": 20, "max_offline_total_yuan": 50,
                            "max_offline_sales": 3, "max_offline_age_hours": 24}}],
     "people":   [{"card": "C001", "name": "张三", "unit": "市财政局"}],
     "events":   [{"at": "2026-01-06T12:05", "tap": {"card": "C001", "canteen": "财政局食堂"}}],
     "expect":   {...}}   (checked with --check: the result's shape, only what it pins)

    \b
    Events: allocate {unit, quarter, per_person_yuan?} · topup {card, yuan}
      tap {card, canteen, terminal?, method?: card|qr} · buy {card, canteen, items | amount_yuan}
      network {canteen, offline_minutes, terminal?} · score {canteen, quarter, score}
      settle {quarter, force?} · close_year {year, force?} · lost {card, new_card?}
      found {card} · price {canteen, sku, price_yuan, reference_price_yuan?}

    \b
    Result: cards, statements, clearing, allocations, sales, declines, refusals,
    ledger_sum_fen, violations, audit. Exit 0: every invariant held (and, with --check,
    every expectation); 1: not; 2: the scenario is invalid (the message names the event
    index and the reason).
    """
    try:
        scenario = load(scenario_path)
    except ScenarioError as exc:
        click.echo(f"场景错误 scenario error: {exc}", err=True)
        sys.exit(2)
    logging.getLogger("terminal.sync").setLevel(logging.ERROR)
    try:
        result = run_scenario(scenario, broker=broker)
    except RuntimeError as exc:  # the system did not settle: a failure of the run, said plainly
        click.echo(f"回放失败 replay failed: {exc}", err=True)
        sys.exit(1)
    failures = check_result(scenario.expect, result) if check else invariant_failures(result)
    _echo(result, as_json, lambda: render_replay(result, failures))
    sys.exit(1 if failures else 0)


@main.command()
@click.option("--units", default=40, show_default=True, help="Government units (单位).")
@click.option("--diners", default=5000, show_default=True, help="Staff holding a card.")
@click.option("--canteens", default=15, show_default=True, help="Units that run a canteen (one each).")
@click.option("--days", default=1, show_default=True, help="Working days to run, ending on --last-day.")
@click.option("--terminals", default=2, show_default=True, help="Terminals per canteen.")
@click.option(
    "--last-day", default="2026-12-31", show_default=True, help="The last working day (YYYY-MM-DD)."
)
@click.option("--seed", default=7, show_default=True)
@click.option("--no-outage", is_flag=True, help="Do not cut a terminal off on the first day.")
@_json_flag
@click.option(
    "--broker",
    type=click.Choice(["embedded", "mosquitto", "auto"]),
    default="auto",
    show_default=True,
    help="auto: Mosquitto when installed (faster), else the embedded broker.",
)
def city(
    units: int,
    diners: int,
    canteens: int,
    days: int,
    terminals: int,
    last_day: str,
    seed: int,
    no_outage: bool,
    as_json: bool,
    broker: str,
) -> None:
    """A generated city: its canteens (the seed's table, imported as CSV), staff, lunch
    rushes with cross-unit visits, top-ups, shop sales, card, QR and face payments through
    the simulated devices, an outage on the first day, then the quarter's settlement and
    the year-end clearing; prints a zh/en summary with the cross-unit dining matrix.
    Exit 0 when every approved sale is applied once and the ledger holds, else 1."""
    if not (1 <= canteens <= units and diners >= 1 and days >= 1 and terminals >= 1):
        raise click.BadParameter("need 1 ≤ canteens ≤ units, diners ≥ 1, days ≥ 1, terminals ≥ 1")
    result = run_city(
        CityOptions(
            units=units,
            diners=diners,
            canteens=canteens,
            days=days,
            terminals=terminals,
            seed=seed,
            last_day=last_day,
            outage=not no_outage,
            broker=broker,
        )
    )
    _echo(result, as_json, lambda: render_city(result))
    sys.exit(0 if consistent(result) else 1)


@main.command()
@click.option(
    "--seed",
    default=1,
    show_default=True,
    type=int,
    help="Decides the taps, the faults and their parameters.",
)
@click.option("--terminals", default=3, show_default=True, type=click.IntRange(2, 32))
@click.option("--diners", default=20, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--minutes",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.05, 600),
    help="Length of the workload (wall clock).",
)
@_chaos_broker
@click.option(
    "--cluster",
    is_flag=True,
    help="3 NATS nodes, 2 server processes and PostgreSQL (nats-server and PostgreSQL installed); "
    "nodes, server processes and PostgreSQL are struck too.",
)
@click.option("--keep", is_flag=True, help="Keep the run's folder (logs, databases) even when it passes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (progress goes to stderr).")
def chaos(
    seed: int,
    terminals: int,
    diners: int,
    minutes: float,
    broker: str,
    cluster: bool,
    keep: bool,
    as_json: bool,
) -> None:
    """Real processes under faults (partitions, broker/server/terminal kills, copies, forgeries,
    clock skew), then drain and audit: exit 0 only if no fen was lost or counted twice."""
    _quiet()
    opts = ChaosOptions(
        seed=seed, terminals=terminals, diners=diners, minutes=minutes, broker=broker, cluster=cluster
    )
    result = run_chaos(opts, say=lambda line: click.echo(line, err=as_json), keep=keep)
    _echo(result, as_json, lambda: render_chaos(result))
    sys.exit(0 if result["ok"] else 1)


@main.command("chaos-sweep")
@click.option(
    "--seeds", default=20, show_default=True, type=click.IntRange(1, 10_000), help="How many seeds."
)
@click.option("--first-seed", default=1, show_default=True, type=int)
@click.option("--terminals", default=4, show_default=True, type=click.IntRange(2, 32))
@click.option("--diners", default=30, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--minutes", default=1.0, show_default=True, type=click.FloatRange(0.05, 600))
@_chaos_broker
@click.option("--cluster", is_flag=True, help="Each run on 3 NATS nodes, 2 server processes, PostgreSQL.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def chaos_sweep(
    seeds: int,
    first_seed: int,
    terminals: int,
    diners: int,
    minutes: float,
    broker: str,
    cluster: bool,
    as_json: bool,
) -> None:
    """Chaos runs over many seeds; reports the seeds tried and failed, exit 1 if any failed."""
    _quiet()
    base = ChaosOptions(
        seed=first_seed, terminals=terminals, diners=diners, minutes=minutes, broker=broker, cluster=cluster
    )
    summary = run_sweep(
        list(range(first_seed, first_seed + seeds)), base, say=lambda line: click.echo(line, err=as_json)
    )
    _echo(
        summary,
        as_json,
        lambda: (
            f"seeds tried {len(summary['seeds_tried'])}, failed {len(summary['seeds_failed'])}"
            f"{' ' + str(summary['seeds_failed']) if summary['seeds_failed'] else ''}; "
            f"faults {summary['faults_total']}, approved {summary['approved']}, "
            f"applied {summary['applied']}, lost {summary['lost']}, double {summary['double_applied']}; "
            f"stolen-key sales {summary['compromised_sent']}, quarantined {summary['quarantined']}, "
            f"applied {summary['quarantined_applied']}, honest held {summary['honest_quarantined']}"
        ),
    )
    sys.exit(1 if summary["seeds_failed"] else 0)


@main.command()
@click.option(
    "--seed", default=1, show_default=True, type=int, help="Decides everything: taps, faults, business."
)
@click.option(
    "--sales", default=10_000, show_default=True, type=click.IntRange(0), help="Taps the diners make."
)
@click.option("--terminals", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--diners-per-terminal", default=25, show_default=True, type=click.IntRange(1, 1_000))
@click.option(
    "--seeds",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Run this many seeds from --seed on.",
)
@click.option(
    "--jobs", default=1, show_default=True, type=click.IntRange(1, 64), help="Seeds run at once (processes)."
)
@click.option(
    "--steps",
    type=click.IntRange(1),
    help="Cut the workload after this step, then heal and check (a prefix).",
)
@click.option(
    "--shrink", "do_shrink", is_flag=True, help="On a failure, find a short failing prefix of the run."
)
@click.option("--plant", type=click.Choice(sorted(PLANTS)), help="Plant a known bug (to see it found).")
@click.option("--no-faults", is_flag=True, help="No faults: the workload and the business alone.")
@click.option(
    "--fault-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 100),
    help="Every fault this much likelier.",
)
@click.option(
    "--wild-clocks",
    is_flag=True,
    help="Terminals without a real-time clock: set back by a power cut, then NTP.",
)
@click.option("--require-all-faults", is_flag=True, help="Fail unless every fault and event kind struck.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the same for the same seed).")
def vopr(
    seed: int,
    sales: int,
    terminals: int,
    diners_per_terminal: int,
    seeds: int,
    jobs: int,
    steps: int | None,
    do_shrink: bool,
    plant: str | None,
    no_faults: bool,
    fault_scale: float,
    wild_clocks: bool,
    require_all_faults: bool,
    as_json: bool,
) -> None:
    """The deterministic simulator: the real terminal and server code on a simulated
    network, clock and disk, faults from the seed, the books checked after every step and
    audited at the end. The same seed replays bit for bit (same output, same digest); the
    speed goes to stderr. Exit 0: every check held; 1: a check failed (the seed and step
    are printed, with the command that replays it)."""
    opts = VoprOptions(
        seed=seed,
        sales=sales,
        terminals=terminals,
        diners_per_terminal=diners_per_terminal,
        steps=steps,
        plant=plant,
        faults=not no_faults,
        fault_scale=fault_scale,
        wild_clocks=wild_clocks,
    )
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    if seeds > 1:
        summary = run_vopr_sweep(list(range(seed, seed + seeds)), opts, say=say, jobs=jobs)
        _echo(summary, as_json, lambda: render_sweep(summary))
        say(
            f"speed: {summary['sales_per_s']:,} sales/s ({summary['elapsed_s']} s, {jobs} at a time; "
            f"{summary['sales_per_cpu_s']:,} sales per CPU second)"
        )
        missing = require_all_faults and summary["never_struck"]
        sys.exit(1 if summary["seeds_failed"] or missing else 0)
    timing: dict[str, float] = {}
    result = run_vopr(opts, timing)
    _echo(result, as_json, lambda: render_vopr(result, opts))
    say(
        f"speed: {timing['sales_per_s']:,.0f} sales/s ({timing['elapsed_s']:.1f} s; "
        f"{result['sales'] / timing['cpu_s']:,.0f} sales per CPU second)"
    )
    if not result["ok"] and do_shrink:
        say(f"shrinking seed {seed}, failed at step {result['failure']['step']:,} …")
        shrunk = shrink(opts, result["failure"]["step"], say=say)
        say(
            f"shortest failing prefix found: {shrunk['steps']:,} steps — "
            f"replay: {replay_command(opts, shrunk['steps'])}"
        )
    never = [
        k for k, v in {**result["faults"], **result["events"]}.items() if not v and k not in OPTIONAL_KINDS
    ]
    sys.exit(1 if not result["ok"] or (require_all_faults and never) else 0)


def _echo(result: Any, as_json: bool, text: Callable[[], str]) -> None:
    """A command's result: one JSON object, or the text ``text()`` renders."""
    click.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else text())


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("shared.mqtt").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
