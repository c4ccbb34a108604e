"""A scenario's ``expect`` block checked against a replay result. Pure.

``expect`` has the shape of the result (see :mod:`simulator.replay.result`) and says only
what the scenario pins:

* an object matches when each of its keys matches the result's (other keys are ignored);
* a list matches a list of the same length whose elements match one by one — so
  ``"declines": [{"card": "C001", "reason": "meal_limit_reached"}]`` says *exactly one*
  decline, of that card, for that reason;
* anything else must be equal.

Every scenario is also held to the invariants, whatever its ``expect`` says: no ledger
violation, ledger sum 0, and every sale a terminal approved applied exactly once at the
server (:func:`simulator.replay.run.healthy`).

``expect_error`` (instead of ``expect``) is for a scenario that must be refused before
it runs: ``{"where": "events[2]", "contains": "two decimals"}``.
"""

from __future__ import annotations

from typing import Any

from simulator.replay.scenario import ScenarioError


def mismatches(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` does not match ``expected`` (empty: it matches)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or '.'}: expected an object, got {actual!r}"]
        out: list[str] = []
        for key, value in expected.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{where}: missing (expected {value!r})")
            else:
                out += mismatches(value, actual[key], where)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {actual!r}"]
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} entries, got {len(actual)}: {actual!r}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out += mismatches(e, a, f"{path}[{i}]")
        return out
    same_kind = isinstance(expected, bool) == isinstance(actual, bool)  # true is not 1
    if not same_kind or expected != actual:
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def invariant_failures(result: dict[str, Any]) -> list[str]:
    """The checks every scenario must pass, as readable lines."""
    out = []
    if result["violations"]:
        out.append(f"ledger violations: {result['violations']}")
    if result["ledger_sum_fen"] != 0:
        out.append(f"ledger sum is {result['ledger_sum_fen']} fen, not 0")
    audit = result["audit"]
    if (
        audit["mismatches"]
        or audit["pending"]
        or audit["approved"] != audit["applied"]
        or audit["reversals_approved"] != audit["reversals_applied"]
    ):
        out.append(f"terminals and server disagree: {audit}")
    return out


def check_result(expect: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Everything wrong with ``result``: broken invariants first, then unmet expectations."""
    return invariant_failures(result) + mismatches(expect, result)


def check_error(expect_error: dict[str, Any], error: ScenarioError | None) -> list[str]:
    """A scenario that must be refused: was it, where and why it should be?"""
    if error is None:
        return [f"expected the scenario to be refused ({expect_error}), but it was accepted"]
    out = []
    if "where" in expect_error and error.where != expect_error["where"]:
        out.append(f"refused at {error.where!r}, expected {expect_error['where']!r} ({error})")
    if "contains" in expect_error and expect_error["contains"] not in str(error):
        out.append(f"refusal {str(error)!r} does not mention {expect_error['contains']!r}")
    return out
