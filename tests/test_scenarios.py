"""The scenario folder: every seed rule as a story replayed through the real system.

Each ``tests/scenarios/*.json`` is run by ``canteen-sim replay`` machinery — a real
server, real terminals with simulated readers, the session's broker, a simulated clock —
and its ``expect`` block is checked against the result, together with the invariants
every run must keep (ledger sum 0, no violation, every approved sale applied once).
``tests/scenarios/invalid/*.json`` must be refused before anything runs, naming where
and why. The scenarios are the readable statement of the rules; see their descriptions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from simulator.cli import main as sim_main
from simulator.replay.check import check_error, check_result, mismatches
from simulator.replay.run import run_scenario
from simulator.replay.scenario import ScenarioError, load, parse

FOLDER = Path(__file__).resolve().parent / "scenarios"
SCENARIOS = sorted(FOLDER.glob("*.json"))
INVALID = sorted((FOLDER / "invalid").glob("*.json"))


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_holds(path: Path, broker, tmp_path: Path) -> None:  # noqa: ANN001
    scenario = load(path)
    result = run_scenario(
        scenario, broker=broker, workdir=tmp_path / "run", terminal_prefix=tmp_path.name[-12:]
    )
    failures = check_result(scenario.expect, result)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_scenario_is_refused_naming_where_and_why(path: Path) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        parse(raw, path.stem)
        error = None
    except ScenarioError as exc:
        error = exc
    problems = check_error(raw["expect_error"], error)
    assert not problems, "\n".join(problems)


def test_the_scenario_folder_covers_every_seed_rule() -> None:
    names = {p.stem for p in SCENARIOS}
    rules = {
        "fee_and_exemption",
        "quality_bands",
        "spend_order",
        "year_end_refund_to_unit",
        "year_end_refund_to_city_finance",
        "late_sale_after_settlement",
        "late_sale_after_year_end",
        "january_before_clearing",
        "lost_card",
        "visitor_prices",
        "meal_limits",
        "shop_price_cap",
        "offline_limits",
        "offline_overdraft",
        "allocation_deadline",
        "issue_example",
        "basket_with_voided_line",  # the cashier's checkout by barcode (issue 13)
        "reversal_double_charge",  # 冲正 (issue 13)
        "reversal_after_quarter_closed",
        "reversal_outside_window",
        "reversal_offline_synced_later",
    }
    assert rules <= names, f"missing: {sorted(rules - names)}"
    for p in SCENARIOS:
        assert load(p).description, f"{p.name} has no description of the rule it pins"


def test_a_scenario_error_exits_2_and_names_the_event(tmp_path: Path) -> None:
    bad = {
        "units": [{"name": "市财政局", "quarterly_standard_yuan": 300}],
        "canteens": [],
        "people": [{"card": "C001", "name": "张三", "unit": "市财政局"}],
        "events": [
            {"at": "2026-01-06T12:00", "topup": {"card": "C001", "yuan": 10}},
            {"at": "2026-01-06T12:01", "topup": {"card": "C001", "yuan": 3.555}},
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    result = CliRunner().invoke(sim_main, ["replay", str(path)])
    assert result.exit_code == 2
    assert "events[1]" in result.output and "two decimals" in result.output


def test_expectations_match_objects_by_subset_and_lists_exactly() -> None:
    actual = {
        "cards": {"C001": {"subsidy_fen": 0, "self_fen": 50}},
        "declines": [{"card": "C001", "reason": "x"}],
    }
    assert mismatches({"cards": {"C001": {"self_fen": 50}}}, actual) == []
    assert mismatches({"declines": []}, actual)  # one decline where none was expected
    assert mismatches({"cards": {"C001": {"self_fen": 49}}}, actual)
    assert mismatches({"cards": {"C002": {}}}, actual)
    assert mismatches({"x": True}, {"x": 1})  # true is not 1


@pytest.mark.broker
@pytest.mark.slow
def test_replay_check_exits_1_naming_an_unmet_expectation(tmp_path: Path) -> None:
    story = {
        "units": [{"name": "市财政局", "quarterly_standard_yuan": 300}],
        "canteens": [],
        "people": [{"card": "C001", "name": "张三", "unit": "市财政局"}],
        "events": [{"at": "2026-01-05T09:00", "allocate": {"unit": "市财政局", "quarter": "2026Q1"}}],
        "expect": {"cards": {"C001": {"subsidy_fen": 29999}}},
    }
    path = tmp_path / "story.json"
    path.write_text(json.dumps(story, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(sim_main, ["replay", "--check", "--broker", "auto", str(path)])
    assert result.exit_code == 1, result.output
    assert "cards.C001.subsidy_fen: expected 29999, got 30000" in result.output
    story["expect"]["cards"]["C001"]["subsidy_fen"] = 30000
    path.write_text(json.dumps(story, ensure_ascii=False), encoding="utf-8")
    assert CliRunner().invoke(sim_main, ["replay", "--check", "--broker", "auto", str(path)]).exit_code == 0
