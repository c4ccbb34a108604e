"""Quarterly settlement (季度结算) in the console: preview every statement, then close.

* ``/money/settlements`` — the quarters settled so far and the next one to settle.
* ``/money/settlements/<quarter>`` — a closed quarter's statements and payout list; an open
  one's **preview**: every canteen's statement as closing it now would book it (the real
  :func:`~server.closing.settlement.settle_quarter`, rolled back: :mod:`server.web.rehearsal`),
  the terminals that have not reported past the quarter's end, the payout list, and the form
  to close it — an explicit confirmation, and forcing when terminals are behind.
* The close (admin) books exactly what was previewed or nothing (``preview_outdated``).
* Downloads: statements (结算单) and the payout list (付款清单) as CSV — the API's own files
  (:mod:`server.closing.statement_files`) — and the same rows as Excel.

An operator opens a closed quarter's page and its statements download for their own canteens
only (the API's :func:`~server.infra.scope.canteen_filter`); the payout list is the bureau's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from wtforms import BooleanField, HiddenField
from wtforms.validators import DataRequired

from server.books.periods import Quarter
from server.books.settlement_rules import payee_nets, payee_payouts
from server.closing import settlement
from server.closing.statement_files import (
    PAYOUT_HEADERS,
    PAYOUT_YUAN_COLUMNS,
    STATEMENT_HEADERS,
    STATEMENT_YUAN_COLUMNS,
    payout_csv,
    payout_lines,
    payout_rows,
    statement_csv,
    statement_rows,
)
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import canteen_filter, principal
from server.infra.xlsx_safe import write_xlsx
from server.web.blueprint import web_blueprint
from server.web.downloads import FORMATS, attachment
from server.web.forms import Form, refusal_text, refuse, status_of
from server.web.guard import page
from server.web.periods import quarter_arg
from server.web.rehearsal import figures_digest, rehearse
from shared.errors import DomainError
from shared.money import format_fen

bp = web_blueprint("web_settle", __name__)

WARNINGS = {
    "quality_score_missing": "未录入质量评分，按 100% 支付",
    "payee_bank_account_missing": "收款人缺少银行账号",
}
ADJUSTMENT_REASONS = {"late": "结账后到达的消费", "before_first_settlement": "首次结算前的消费"}


class CloseForm(Form):
    confirm = BooleanField(
        "我已逐一核对以上结算单，确认结账（结账后结算单不可更改）",
        validators=[DataRequired("请先勾选确认")],
    )
    force = BooleanField(
        "仍然结账：这些终端之后上传的本季度消费，将作为调整计入下一季度的结算单",
    )
    digest = HiddenField()


def _document(quarter: Quarter) -> dict[str, Any] | None:
    """The closed quarter's document as the caller may see it (an operator: their canteens)."""
    conn = get_db()
    return settlement.settlement_document(conn, str(quarter), canteen_filter(conn))


def preview(quarter: Quarter) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the document closing ``quarter`` now would give, the terminals behind its end).
    Refusals (not ended, out of order) propagate; terminals behind do not stop a preview."""
    conn = get_db()
    behind = settlement.period_laggards(conn, quarter.end_ms)
    doc, _ = rehearse(
        conn, lambda: settlement.settle_quarter(conn, str(quarter), get_clock().now_ms(), force=True)
    )
    return doc, behind


def next_to_settle() -> Quarter:
    last = settlement.last_settled(get_db())
    return last.next() if last else Quarter.of_ms(get_clock().now_ms()).prev()


def decorate(doc: dict[str, Any]) -> dict[str, Any]:
    """What people read beside the figures: warnings and adjustment reasons in Chinese."""
    for st in doc["statements"]:
        st["warnings_zh"] = [WARNINGS.get(w, w) for w in st["warnings"]]
        for adj in st["adjustments"]:
            adj["reason_zh"] = ADJUSTMENT_REASONS.get(adj["reason"], adj["reason"])
    doc["payouts"] = payout_lines(doc)
    _, doc["owed_after"] = payee_payouts(doc.get("carried_fen", {}), payee_nets(doc["statements"]))
    doc["payouts_total_fen"] = sum(p["amount_fen"] for p in doc["payouts"])
    return doc


@bp.get("/money/settlements")
@page("admin", "auditor")
def settlements() -> str:
    rows = (
        get_db()
        .execute(
            "SELECT p.quarter, p.closed_at_ms, p.forced, count(s.canteen_id) AS canteens, "
            "coalesce(sum(s.gross_fen), 0) AS gross_fen, coalesce(sum(s.net_fen), 0) AS net_fen "
            "FROM settlement_periods p LEFT JOIN statements s ON s.quarter = p.quarter "
            "GROUP BY p.quarter ORDER BY p.end_ms DESC"
        )
        .fetchall()
    )
    nxt = next_to_settle()
    return render_template(
        "money/settlements.html",
        periods=rows,
        next_quarter=str(nxt),
        next_ended=get_clock().now_ms() >= nxt.end_ms,
    )


def _show(quarter: Quarter, form: CloseForm | None = None, status: int = 200) -> tuple[str, int]:
    doc = _document(quarter)
    if doc is not None:
        return render_template("money/settlement.html", doc=decorate(doc), closed=True), 200
    if principal().role == "operator":
        raise DomainError("not_found", f"{quarter} is not settled")
    try:
        draft, behind = preview(quarter)
    except DomainError as exc:
        if exc.code not in ("period_open", "period_out_of_order"):
            raise
        return render_template(
            "money/settlement.html",
            doc=None,
            quarter=str(quarter),
            refusal=exc,
            refusal_text=refusal_text(exc),
            closed=False,
            next_quarter=str(next_to_settle()),
        ), 409
    form = form or CloseForm()
    form.digest.data = figures_digest(draft)
    return render_template(
        "money/settlement.html", doc=decorate(draft), closed=False, behind=behind, form=form
    ), status


@bp.get("/money/settlements/<quarter>")
@page("admin", "auditor", "operator")
def settlement_page(quarter: str) -> tuple[str, int]:
    return _show(quarter_arg(quarter))


@bp.post("/money/settlements/<quarter>")
@page("admin")
def close(quarter: str) -> Response | tuple[str, int]:
    q = quarter_arg(quarter)
    form = CloseForm()
    if form.validate_on_submit():
        conn = get_db()
        try:
            with write_txn(conn):
                doc, created = settlement.settle_quarter(
                    conn, str(q), get_clock().now_ms(), force=bool(form.force.data)
                )
                if created and figures_digest(doc) != form.digest.data:
                    raise DomainError("preview_outdated", f"{q}: the figures changed after the preview")
        except DomainError as exc:
            if exc.code not in ("terminals_behind", "preview_outdated", "period_open", "period_out_of_order"):
                raise
            refuse(form, exc, "force" if exc.code == "terminals_behind" else None)
            form.confirm.data = False  # what is shown now is a new preview: confirm it anew
        else:
            if created:
                net = format_fen(sum(s["net_fen"] for s in doc["statements"]))
                flash(f"{q} 已结账：{len(doc['statements'])} 份结算单，应付合计 {net}。", "success")
            else:
                flash(f"{q} 此前已经结账，以下是当时的结算单。", "info")
            return redirect(url_for("web_settle.settlement_page", quarter=str(q)))  # type: ignore[return-value]
    return _show(q, form, status_of(form))


def _closed(quarter: str) -> dict[str, Any]:
    doc = _document(quarter_arg(quarter))
    if doc is None:
        raise DomainError("not_found", f"{quarter} is not settled")
    return doc


def _file(
    doc: dict[str, Any],
    to_csv: Callable[[dict[str, Any]], str],
    to_rows: Callable[[dict[str, Any]], list[list[Any]]],
    headers: list[str],
    money: frozenset[int],
    stem: str,
) -> Response:
    """The API's CSV file, or the same rows as Excel (yuan columns as ¥ numbers)."""
    fmt = request.args.get("format", "csv")
    if fmt == "csv":
        return attachment(to_csv(doc).encode("utf-8"), f"{stem}.csv", FORMATS["csv"])
    if fmt == "xlsx":
        cells = [[None if v == "" else v for v in r] for r in to_rows(doc)]
        data = write_xlsx(headers, cells, title=stem, money_columns=money)
        return attachment(data, f"{stem}.xlsx", FORMATS["xlsx"])
    raise DomainError(
        "invalid_input", f"format must be csv or xlsx, not {fmt!r}", zh="下载格式须为 CSV 或 Excel"
    )


@bp.get("/money/settlements/<quarter>/statements")
@page("admin", "auditor", "operator")
def statements_file(quarter: str) -> Response:
    doc = _closed(quarter)
    stem = f"结算单-{doc['quarter']}"
    return _file(doc, statement_csv, statement_rows, STATEMENT_HEADERS, STATEMENT_YUAN_COLUMNS, stem)


@bp.get("/money/settlements/<quarter>/payouts")
@page("admin", "auditor")
def payouts_file(quarter: str) -> Response:
    doc = _closed(quarter)
    stem = f"付款清单-{doc['quarter']}"
    return _file(doc, payout_csv, payout_rows, PAYOUT_HEADERS, PAYOUT_YUAN_COLUMNS, stem)
