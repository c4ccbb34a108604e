"""Reports (read-only) and the live ledger check.

Operators see their own canteens' figures; clerks see their own unit's allocation status,
overdrafts and blocked cards; the bureau and auditors see everything.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from server.api.money_common import (
    DATE_QUERY,
    QUARTER_QUERY,
    canteen_filter,
    day_arg,
    quarter_arg,
    unit_scope,
)
from server.api.params import actor_id
from server.api.spec import doc
from server.books import ledger
from server.books.periods import day_bounds_ms
from server.closing import day_closes, reports
from server.closing.check import all_violations, quarantine_summary, record_check
from server.infra.auth import requires
from server.infra.db_flask import get_clock, get_db

bp = Blueprint("reports", __name__, url_prefix="/api/v1")

TOTALS = {
    "type": "object",
    "properties": {
        "canteens": {"type": "array", "items": {"type": "object"}},
        "units": {"type": "array", "items": {"type": "object"}},
        "totals": {"type": "object"},
    },
}


@bp.get("/reports/daily")
@doc("One day's sales totals per canteen and per diners' unit", query=DATE_QUERY, response=TOTALS)
@requires("admin", "auditor", "operator")
def daily() -> Response:
    conn = get_db()
    day, start, end = day_arg()
    return jsonify({"date": day, **reports.sales_totals(conn, start, end, canteen_filter(conn))})


@bp.get("/reports/quarterly")
@doc("A quarter's sales totals per canteen and per diners' unit", query=QUARTER_QUERY, response=TOTALS)
@requires("admin", "auditor", "operator")
def quarterly() -> Response:
    conn = get_db()
    q = quarter_arg()
    return jsonify(
        {"quarter": str(q), **reports.sales_totals(conn, q.start_ms, q.end_ms, canteen_filter(conn))}
    )


@bp.get("/reports/dining-matrix")
@doc(
    "Diners' unit × host canteen for a quarter (count, amount) and the cross-unit share",
    query=QUARTER_QUERY,
    response={"type": "object"},
)
@requires("admin", "auditor")
def dining_matrix() -> Response:
    q = quarter_arg()
    return jsonify({"quarter": str(q), **reports.dining_matrix(get_db(), q.start_ms, q.end_ms)})


@bp.get("/reports/allocations")
@doc(
    "Allocation status per unit for a quarter: on_time, late, missing or pending (a clerk: their unit)",
    query=QUARTER_QUERY,
    response={"type": "object"},
)
@requires("admin", "auditor", "clerk")
def allocations() -> Response:
    return jsonify(
        reports.allocation_status(get_db(), str(quarter_arg()), get_clock().now_ms(), unit_scope())
    )


@bp.get("/reports/overdrafts")
@doc("Holders with an uncovered offline overdraft (a clerk: their unit's)", response={"type": "object"})
@requires("admin", "auditor", "clerk")
def overdrafts() -> Response:
    return jsonify(reports.overdrafts(get_db(), unit_scope()))


@bp.get("/reports/blocked-cards")
@doc("Cards terminals refuse, and why (a clerk: their unit's)", response={"type": "object"})
@requires("admin", "auditor", "clerk")
def blocked_cards() -> Response:
    return jsonify(reports.blocked_cards(get_db(), unit_scope()))


@bp.get("/ledger/check")
@doc(
    "Verify every ledger and money invariant on the live database",
    response={
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "ledger_sum_fen": {"type": "integer"},
            "violations": {"type": "array", "items": {"type": "object"}},
            "quarantine": {"type": "object"},
        },
    },
)
@requires("admin", "auditor")
def check() -> Response:
    conn = get_db()
    violations = all_violations(conn)
    record_check(conn, violations, get_clock().now_ms(), actor_id())
    return jsonify(
        {
            "ok": not violations,
            "ledger_sum_fen": ledger.ledger_sum(conn),
            "violations": [v.to_json() for v in violations],
            "quarantine": quarantine_summary(conn),
        }
    )


@bp.get("/reports/day-closes")
@doc(
    "Terminals' day closes (Z-reports), each compared now with the sales the server holds for "
    "it: matched, waiting (sales not yet received) or mismatch (code day_close_mismatch, with "
    "the differences); an operator sees their canteens'",
    query={
        "date": {"type": "string", "format": "date", "description": "business day; default: all"},
        "terminal_id": {"type": "string"},
    },
    response={"type": "object"},
)
@requires("admin", "auditor", "operator")
def day_close_report() -> Response:
    conn = get_db()
    day = request.args.get("date") or None
    if day is not None:
        day_bounds_ms(day)  # refuses what is not a date
    terminal_id = request.args.get("terminal_id") or None
    return jsonify(day_closes.report(conn, day, terminal_id, canteen_filter(conn)))
