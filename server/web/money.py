"""Money in (admin; auditor reads): quarterly allocations per unit against their due date, making
an allocation (admin, or a clerk for their own unit, as the API allows), and self top-ups.

Every action is the registry's own function inside one write transaction
(:func:`server.registry.funds.allocate`, :func:`server.registry.funds.topup`), after the API's
scope check; a refusal rolls it back and is shown beside the field it concerns, in Chinese.
"""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from server.closing import reports
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal, require_card_access, require_unit_access, unit_filter
from server.registry import funds
from server.web.blueprint import web_blueprint
from server.web.downloads import table_download
from server.web.forms import Form, refuse, status_of
from server.web.guard import page
from server.web.lists import list_table, page_of, rows_of
from server.web.periods import quarter_arg, recent_quarters
from server.web.tables import Column
from shared.amounts import check_amount
from shared.errors import DomainError
from shared.money import format_fen, parse_yuan

bp = web_blueprint("web_money", __name__)

REQUIRED = "请填写此项"
ALLOCATION_STATUS = {
    "on_time": "按时拨付",
    "late": "逾期拨付",
    "missing": "逾期未拨付",
    "pending": "未到期，待拨付",
}
STATUS_TABLE = list_table(
    "allocation-status",
    (
        Column("unit_id", "单位编号", "unit_id"),
        Column("unit_name", "单位", "unit_name"),
        Column("status_zh", "状态", "status_zh"),
        Column("allocated_at_ms", "拨付时间", "allocated_at_ms", "time"),
        Column("headcount", "人数", "headcount", "int"),
        Column("per_person_fen", "每人", "per_person_fen", "fen"),
        Column("total_fen", "合计", "total_fen", "fen"),
    ),
    "unit_id",
    search_keys=("unit_id", "unit_name", "status_zh"),
    search_label="按单位或状态查找",
)


def allocation_rows(quarter: str, unit_id: str | None = None) -> dict[str, Any]:
    """The quarter's allocation status per unit (:func:`server.closing.reports.allocation_status`)
    with the status in Chinese."""
    data = reports.allocation_status(get_db(), quarter, get_clock().now_ms(), unit_id)
    for u in data["units"]:
        u["status_zh"] = ALLOCATION_STATUS[u["status"]]
    return data


@bp.get("/money/allocations")
@page("admin", "auditor")
def allocations() -> str | Response:
    q = quarter_arg()
    data = allocation_rows(str(q))
    query = STATUS_TABLE.query(request.args)
    if request.args.get("format"):
        return table_download(
            STATUS_TABLE.table, rows_of(STATUS_TABLE, data["units"], query), f"经费拨付-{q}"
        )
    counts = {k: sum(1 for u in data["units"] if u["status"] == k) for k in ALLOCATION_STATUS}
    return render_template(
        "money/allocations.html",
        data=data,
        counts=counts,
        table=page_of(STATUS_TABLE, data["units"], query),
        quarters=recent_quarters(q),
    )


# --- making an allocation -------------------------------------------------------------------


class AllocationForm(Form):
    unit_id = SelectField("单位", validators=[DataRequired(REQUIRED)])
    quarter = SelectField("季度", validators=[DataRequired(REQUIRED)])
    per_person = StringField(
        "每人金额（元）",
        description="不填则按该单位的季度标准；最多两位小数",
        validators=[Optional(), Length(max=20, message="金额过长")],
    )


# where a refusal of funds.allocate belongs on the form, and how to say it there
ALLOCATION_REFUSALS = {
    "not_found": ("unit_id", "没有这个单位"),
    "invalid_input": ("unit_id", "该单位在册人员为零，无需拨付"),
    "already_exists": ("quarter", "该单位本季度已拨付，每季度只拨付一次"),
    "period_closed": ("quarter", "该年度已年末清零，不能再拨付"),
    "amount_above_ceiling": ("per_person", ""),
}


def _ceiling_text(exc: DomainError) -> str:
    ceiling = exc.context.get("ceiling_fen")
    return f"上限为每人 {format_fen(ceiling)}" if isinstance(ceiling, int) else ""


def _units_for_form() -> list[dict[str, Any]]:
    """The units the caller may allocate for, with their standard and headcount (a clerk: theirs)."""
    unit = unit_filter()
    rows = (
        get_db()
        .execute(
            "SELECT u.id, u.name, u.quarterly_standard_fen AS standard_fen, "
            "(SELECT count(*) FROM holders h WHERE h.unit_id = u.id AND h.status = 'active') AS headcount "
            "FROM units u WHERE ? IS NULL OR u.id = ? ORDER BY u.id",
            (unit, unit),
        )
        .fetchall()
    )
    return [dict(r) for r in rows]


def _per_person_fen(form: AllocationForm) -> tuple[bool, int | None]:
    """(valid, fen or None for the unit's standard) from the form's yuan text."""
    text = (form.per_person.data or "").strip()
    if not text:
        return True, None
    try:
        return True, check_amount(parse_yuan(text), "allocation per person")
    except DomainError as exc:
        zh = "请填写大于零的金额，最多两位小数" if exc.code == "invalid_input" else ""
        refuse(form, DomainError(exc.code, exc.detail, zh=zh) if zh else exc, "per_person")
        return False, None


@bp.route("/money/allocate", methods=["GET", "POST"])
@page("admin", "clerk")
def allocate() -> Response | tuple[str, int]:
    units = _units_for_form()
    form = AllocationForm()
    form.unit_id.choices = [(u["id"], f"{u['name']}（{u['id']}）") for u in units]
    q = quarter_arg()
    form.quarter.choices = [(x, x) for x in recent_quarters(q)]
    if request.method == "GET":
        form.quarter.data = str(q)
        form.unit_id.data = request.args.get("unit_id") or (units[0]["id"] if len(units) == 1 else None)
    if form.validate_on_submit():
        ok, per_person = _per_person_fen(form)
        if ok:
            conn = get_db()
            try:
                require_unit_access(conn, form.unit_id.data)
                with write_txn(conn):
                    done = funds.allocate(
                        conn, form.unit_id.data, form.quarter.data, per_person, get_clock().now_ms()
                    )
            except DomainError as exc:
                if exc.code == "forbidden":
                    raise
                field, zh = ALLOCATION_REFUSALS.get(exc.code, (None, ""))
                zh = zh or _ceiling_text(exc)
                refuse(form, DomainError(exc.code, exc.detail, zh=zh) if zh else exc, field)
            else:
                name = next(u["name"] for u in units if u["id"] == done["unit_id"])
                flash(
                    f"已拨付 {name} {done['quarter']} 就餐经费：每人 {format_fen(done['per_person_fen'])}"
                    f" × {done['holders']} 人 = {format_fen(done['total_fen'])}"
                    + ("（已过本季度 10 日截止日，记为逾期拨付）" if done["late"] else "。"),
                    "success",
                )
                target = "web_clerk.home" if principal().role == "clerk" else "web_money.allocations"
                return redirect(url_for(target, quarter=done["quarter"]))  # type: ignore[return-value]
    return render_template("money/allocate.html", form=form, units=units), status_of(form)


# --- self top-up ----------------------------------------------------------------------------


class TopupForm(Form):
    card_id = StringField("卡号", validators=[DataRequired(REQUIRED), Length(max=64, message="卡号过长")])
    amount = StringField(
        "充值金额（元）",
        description="持卡人本人银行转入的金额，最多两位小数",
        validators=[DataRequired(REQUIRED), Length(max=20, message="金额过长")],
    )
    ref = StringField(
        "银行流水号",
        description="选填；同一流水号只能入账一次，防止重复充值",
        validators=[Optional(), Length(max=64, message="流水号过长")],
    )


TOPUP_REFUSALS = {
    "card_unknown": ("card_id", "没有这张卡"),
    "already_exists": ("ref", "这个银行流水号已经入账，不能重复充值"),
}


@bp.route("/money/topup", methods=["GET", "POST"])
@page("admin")
def topup() -> Response | tuple[str, int]:
    form = TopupForm()
    if form.validate_on_submit():
        conn = get_db()
        card_id = (form.card_id.data or "").strip()
        try:
            amount = parse_yuan(form.amount.data)
            card = require_card_access(conn, card_id)
            with write_txn(conn):
                balance = funds.topup(
                    conn, card_id, amount, get_clock().now_ms(), ref=(form.ref.data or "").strip() or None
                )
        except DomainError as exc:
            if exc.code == "forbidden":
                raise
            field, zh = TOPUP_REFUSALS.get(exc.code, ("amount", ""))
            if exc.code == "amount_above_ceiling":
                ceiling = exc.context.get("ceiling_fen")
                zh = f"单笔充值上限为 {format_fen(ceiling)}" if isinstance(ceiling, int) else ""
            elif exc.code == "invalid_input" and field == "amount":
                zh = "请填写大于零的金额"
            refuse(form, DomainError(exc.code, exc.detail, zh=zh) if zh else exc, field)
        else:
            holder = conn.execute("SELECT name FROM holders WHERE id = ?", (card["holder_id"],)).fetchone()
            flash(
                f"已为 {holder['name']}（卡号 {card_id}）充值 {format_fen(amount)}，"
                f"自费余额 {format_fen(balance)}。",
                "success",
            )
            return redirect(url_for("web_money.topup"))  # type: ignore[return-value]
    return render_template("money/topup.html", form=form), status_of(form)
