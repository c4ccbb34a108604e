"""Closing periods: quarterly settlement (statements, payout file) and year-end clearing.

An operator sees only the statements of the canteens they run; a clerk sees only their own
unit's line of a clearing report. Closing is the bureau's (admin) job.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from server.api.money_common import (
    canteen_filter,
    csv_response,
    flag_value,
    quarter_arg,
    unit_scope,
    year_arg,
)
from server.api.params import json_body
from server.api.spec import doc
from server.closing import clearing, settlement
from server.closing.statement_files import payout_csv, payout_lines, statement_csv
from server.infra.auth import requires
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.run_once import run_once
from shared.errors import DomainError

bp = Blueprint("settlements", __name__, url_prefix="/api/v1")

FORCE = {
    "type": "object",
    "properties": {
        "force": {
            "type": "boolean",
            "description": "close although some terminals have not reported past the end",
        }
    },
}
STATEMENT = {
    "type": "object",
    "properties": {
        k: {"type": "integer"}
        for k in (
            "sales_count",
            "gross_fen",
            "withheld_fen",
            "adjustments_fen",
            "settlement_fen",
            "fee_fen",
            "net_fen",
            "pay_pct",
        )
    }
    | {
        "canteen_id": {"type": "string"},
        "quality_score": {"type": ["integer", "null"]},
        "adjustments": {"type": "array", "items": {"type": "object"}},
        "payee": {"type": "object"},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}
SETTLEMENT = {
    "type": "object",
    "properties": {
        "quarter": {"type": "string"},
        "closed_at_ms": {"type": "integer"},
        "forced": {"type": "boolean"},
        "incomplete_terminals": {"type": "array", "items": {"type": "object"}},
        "statements": {"type": "array", "items": STATEMENT},
        "totals": {"type": "object"},
    },
}
CLEARING = {
    "type": "object",
    "properties": {
        "year": {"type": "integer"},
        "refund_to": {"type": "string", "enum": list(clearing.REFUND_TARGETS)},
        "cleared_at_ms": {"type": "integer"},
        "forced": {"type": "boolean"},
        "units": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "unit_id": {"type": "string"},
                    "holders": {"type": "integer"},
                    "cleared_fen": {"type": "integer"},
                    "late_sales_fen": {"type": "integer"},
                    "refund_fen": {"type": "integer"},
                },
            },
        },
        "totals": {"type": "object"},
    },
}


def _document(quarter: str) -> dict:
    conn = get_db()
    q = str(quarter_arg(quarter))
    doc_ = settlement.settlement_document(conn, q, canteen_filter(conn))
    if doc_ is None:
        raise DomainError("not_found", f"{q} is not settled")
    return doc_


@bp.get("/settlements")
@doc("Settled quarters", response={"type": "array", "items": {"type": "object"}})
@requires("admin", "auditor", "operator")
def list_settlements() -> Response:
    rows = (
        get_db()
        .execute("SELECT quarter, closed_at_ms, forced FROM settlement_periods ORDER BY end_ms")
        .fetchall()
    )
    return jsonify([{**dict(r), "forced": bool(r["forced"])} for r in rows])


@bp.post("/settlements/<quarter>")
@doc(
    "Settle a quarter for every canteen (201: closed now; 200: already closed, the stored statements)",
    request=FORCE,
    response=SETTLEMENT,
    status=201,
)
@requires("admin")
def settle(quarter: str) -> tuple[Response, int]:
    force = flag_value(json_body(), "force")
    conn = get_db()
    with run_once(current_app.config["DATABASE"], "settlement"), write_txn(conn):
        doc_, created = settlement.settle_quarter(
            conn, str(quarter_arg(quarter)), get_clock().now_ms(), force=force
        )
    return jsonify(doc_), 201 if created else 200


@bp.get("/settlements/<quarter>")
@doc("A settled quarter's statements (an operator: their canteens only)", response=SETTLEMENT)
@requires("admin", "auditor", "operator")
def get_settlement(quarter: str) -> Response:
    return jsonify(_document(quarter))


@bp.get("/settlements/<quarter>/statements.csv")
@doc("Statements as CSV with Chinese headers (结算单)", response={"type": "string"}, content_type="text/csv")
@requires("admin", "auditor", "operator")
def statements_csv(quarter: str) -> Response:
    d = _document(quarter)
    return csv_response(statement_csv(d), f"结算单-{d['quarter']}.csv")


@bp.get("/settlements/<quarter>/payouts")
@doc("The payout lines: payee, bank account, amount", response={"type": "array", "items": {"type": "object"}})
@requires("admin", "auditor")
def payouts(quarter: str) -> Response:
    return jsonify(payout_lines(_document(quarter)))


@bp.get("/settlements/<quarter>/payouts.csv")
@doc(
    "The payout file (付款清单): payee, bank account, amount",
    response={"type": "string"},
    content_type="text/csv",
)
@requires("admin", "auditor")
def payouts_csv(quarter: str) -> Response:
    d = _document(quarter)
    return csv_response(payout_csv(d), f"付款清单-{d['quarter']}.csv")


@bp.post("/clearings/<year>")
@doc(
    "Year-end clearing: refund every card's remaining subsidy (to units or city finance per the setting)",
    request=FORCE,
    response=CLEARING,
    status=201,
)
@requires("admin")
def close_year(year: str) -> tuple[Response, int]:
    force = flag_value(json_body(), "force")
    refund_to = current_app.config.get("YEAR_END_REFUND_TO", "unit")
    conn = get_db()
    with run_once(current_app.config["DATABASE"], "clearing"), write_txn(conn):
        report, created = clearing.close_year(
            conn, year_arg(year), get_clock().now_ms(), refund_to=refund_to, force=force
        )
    return jsonify(report), 201 if created else 200


@bp.get("/clearings/<year>")
@doc("A year's clearing report per unit, with late-sale adjustments (a clerk: their unit)", response=CLEARING)
@requires("admin", "auditor", "clerk")
def get_clearing(year: str) -> Response:
    unit = unit_scope()
    report = clearing.clearing_report(get_db(), year_arg(year), None if unit is None else [unit])
    if report is None:
        raise DomainError("not_found", f"{year} is not cleared")
    return jsonify(report)
