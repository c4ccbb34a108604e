"""Year-end clearing (年末清零) in the console: preview per unit, then confirm.

``/money/clearings?year=`` shows a cleared year's report (per paying unit: holders, subsidy
cleared, taken back by late sales, net refund, and where the refund went), or — for a year not
yet cleared — the **preview**: what :func:`~server.closing.clearing.close_year` would clear now,
run and rolled back (:mod:`server.web.rehearsal`), with the refund destination of this
installation (``YEAR_END_REFUND_TO``: each paying unit, or city finance), the terminals not
yet past the cutoff, and the form to confirm (admin). Self purses are never touched, which the
page says. The confirmation books exactly the previewed figures or nothing.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, flash, redirect, render_template, request, url_for
from wtforms import BooleanField, HiddenField
from wtforms.validators import DataRequired

from server.books.periods import year_cutoff_ms
from server.closing import clearing
from server.closing.settlement import period_laggards
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.web.blueprint import web_blueprint
from server.web.downloads import rows_file
from server.web.forms import Form, refusal_text, refuse, status_of
from server.web.guard import page
from server.web.periods import this_year, year_arg
from server.web.rehearsal import figures_digest, rehearse
from shared.errors import DomainError
from shared.money import format_fen

bp = web_blueprint("web_yearend", __name__)

REFUND_TO_ZH = {"unit": "退回原拨付单位", "city_finance": "退回市财政"}
REPORT_HEADERS = [
    "单位编号",
    "单位",
    "人数",
    "清零金额",
    "年末后到达的消费",
    "实际退回",
    "退回去向",
    "退款账户",
]
REPORT_KINDS = ["text", "text", "int", "fen", "fen", "fen", "text", "text"]


class ClearForm(Form):
    confirm = BooleanField(
        "我已核对各单位的清零与退回金额，确认年末清零（清零后不可撤销）",
        validators=[DataRequired("请先勾选确认")],
    )
    force = BooleanField("仍然清零：这些终端之后上传的该年度消费，将从对应单位的退款中扣回")
    digest = HiddenField()


def refund_to_setting() -> str:
    return str(current_app.config.get("YEAR_END_REFUND_TO", "unit"))


def destination(refund_to: str, unit: dict[str, Any]) -> str:
    """Where a unit's refund goes, for people."""
    if refund_to == "city_finance":
        return "市财政"
    return unit.get("unit_name") or unit["unit_id"]


def decorate(report: dict[str, Any]) -> dict[str, Any]:
    report["refund_to_zh"] = REFUND_TO_ZH.get(report["refund_to"], report["refund_to"])
    for u in report["units"]:
        u["destination"] = destination(report["refund_to"], u)
    return report


def preview(year: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    conn = get_db()
    behind = period_laggards(conn, year_cutoff_ms(year))
    report, _ = rehearse(
        conn,
        lambda: clearing.close_year(
            conn, year, get_clock().now_ms(), refund_to=refund_to_setting(), force=True
        ),
    )
    return report, behind


def _cleared_years() -> list[int]:
    return [r[0] for r in get_db().execute("SELECT year FROM clearings ORDER BY year DESC")]


def _show(year: int, form: ClearForm | None = None, status: int = 200) -> tuple[str, int]:
    common = {"year": year, "cleared_years": _cleared_years(), "self_untouched": True}
    report = clearing.clearing_report(get_db(), year)
    if report is not None:
        return render_template("money/clearing.html", report=decorate(report), closed=True, **common), 200
    try:
        draft, behind = preview(year)
    except DomainError as exc:
        if exc.code not in ("period_open", "period_out_of_order"):
            raise
        return render_template(
            "money/clearing.html", report=None, refusal_text=refusal_text(exc), closed=False, **common
        ), 409
    form = form or ClearForm()
    form.digest.data = figures_digest(draft)
    return render_template(
        "money/clearing.html", report=decorate(draft), closed=False, behind=behind, form=form, **common
    ), status


@bp.get("/money/clearings")
@page("admin", "auditor")
def clearings() -> Response | tuple[str, int]:
    year = year_arg(request.args.get("year"), this_year() - 1)
    fmt = request.args.get("format")
    if fmt:
        report = clearing.clearing_report(get_db(), year)
        if report is None:
            raise DomainError("not_found", f"{year} is not cleared")
        decorate(report)
        rows = [
            [
                u["unit_id"],
                u["unit_name"],
                u["holders"],
                u["cleared_fen"],
                u["late_sales_fen"],
                u["refund_fen"],
                u["destination"],
                u["refund_account"],
            ]
            for u in report["units"]
        ]
        return rows_file(fmt, REPORT_HEADERS, REPORT_KINDS, rows, f"年末清零-{year}")
    return _show(year)


@bp.post("/money/clearings/<year>")
@page("admin")
def close_year(year: str) -> Response | tuple[str, int]:
    y = year_arg(year, this_year() - 1)
    form = ClearForm()
    if form.validate_on_submit():
        conn = get_db()
        try:
            with write_txn(conn):
                report, created = clearing.close_year(
                    conn, y, get_clock().now_ms(), refund_to=refund_to_setting(), force=bool(form.force.data)
                )
                if created and figures_digest(report) != form.digest.data:
                    raise DomainError("preview_outdated", f"{y}: the figures changed after the preview")
        except DomainError as exc:
            if exc.code not in ("terminals_behind", "preview_outdated", "period_open", "period_out_of_order"):
                raise
            refuse(form, exc, "force" if exc.code == "terminals_behind" else None)
            form.confirm.data = False  # a new preview is shown: confirm it anew
        else:
            if created:
                total = format_fen(report["totals"]["refund_fen"])
                flash(f"{y} 年度已清零：退回合计 {total}（{REFUND_TO_ZH[report['refund_to']]}）。", "success")
            else:
                flash(f"{y} 年度此前已经清零，以下是当时的结果。", "info")
            return redirect(url_for("web_yearend.clearings", year=y))  # type: ignore[return-value]
    return _show(y, form, status_of(form))
