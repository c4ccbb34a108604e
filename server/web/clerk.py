"""The unit clerk's page (单位经办人): their unit's staff, allocations, the quality scores of the
canteens their unit hosts (and entering them), and where their staff eat across the city.

Everything is scoped by the API's own rules: the clerk's unit from their principal
(:func:`~server.infra.scope.unit_filter`), their unit's canteens
(:func:`~server.infra.scope.canteen_filter`), and the figures come from the report functions
the API serves (:func:`server.closing.reports.allocation_status`,
:func:`server.closing.reports.dining_matrix`, :func:`server.closing.quality.quality_report`).
Entering a score is :func:`server.closing.quality.set_score` after
:func:`~server.infra.scope.require_canteen_access`, as ``PUT /api/v1/canteens/<id>/quality-scores/<quarter>``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from wtforms import IntegerField, SelectField
from wtforms.validators import InputRequired, NumberRange

from server.books import ledger
from server.closing import quality, reports
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import canteen_filter, principal, require_canteen_access, unit_filter
from server.web.blueprint import web_blueprint
from server.web.downloads import rows_file
from server.web.forms import Form, refuse, status_of
from server.web.guard import page
from server.web.money import allocation_rows
from server.web.periods import quarter_arg, recent_quarters
from server.web.scoped import canteens_of
from shared.errors import DomainError

bp = web_blueprint("web_clerk", __name__)


def staff_summary(unit_id: str) -> dict[str, Any]:
    """How many on the roster and who has left; what their purses hold in all."""
    conn = get_db()
    counts = dict(
        conn.execute(
            "SELECT status, count(*) FROM holders WHERE unit_id = ? GROUP BY status", (unit_id,)
        ).fetchall()
    )

    def total(join: str) -> int:
        sql = "SELECT coalesce(sum(a.balance_fen), 0) FROM holders h JOIN accounts a ON " + join
        sql += " WHERE h.unit_id = ?"
        return int(conn.execute(sql, (unit_id,)).fetchone()[0])

    return {
        "active": counts.get("active", 0),
        "left": counts.get("left", 0),
        "subsidy_fen": total(ledger.is_subsidy_purse_sql("a.id", "h.id")),
        "self_fen": total("a.id = " + ledger.purse_id_sql("h.id", "self")),
    }


def allocation_history(unit_id: str) -> list[dict[str, Any]]:
    rows = get_db().execute(
        "SELECT quarter, per_person_fen, headcount, total_fen, at_ms, due_ms FROM allocations "
        "WHERE unit_id = ? ORDER BY quarter DESC",
        (unit_id,),
    )
    return [{**dict(r), "late": r["at_ms"] >= r["due_ms"]} for r in rows]


def staff_dining(unit_id: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """The unit's row of the dining matrix: per canteen, what its staff spent there."""
    conn = get_db()
    data = reports.dining_matrix(conn, start_ms, end_ms)
    names = {r[0]: r[1] for r in conn.execute("SELECT id, name FROM canteens")}
    units = {r[0]: r[1] for r in conn.execute("SELECT id, name FROM units")}
    rows = [
        {
            **c,
            "canteen_name": names.get(c["canteen_id"], c["canteen_id"]),
            "host_unit_name": units.get(c["host_unit_id"] or "", c["host_unit_id"] or ""),
        }
        for c in data["cells"]
        if c["diner_unit_id"] == unit_id
    ]
    return sorted(rows, key=lambda r: (-r["amount_fen"], r["canteen_id"]))


@bp.get("/unit")
@page("clerk")
def home() -> str | Response:
    unit_id = unit_filter()
    assert unit_id is not None  # a clerk always has their unit (accounts.add_staff requires it)
    conn = get_db()
    unit = conn.execute("SELECT * FROM units WHERE id = ?", (unit_id,)).fetchone()
    if unit is None:
        raise DomainError("not_found", f"unit {unit_id}")
    q = quarter_arg()
    dining = staff_dining(unit_id, q.start_ms, q.end_ms)
    fmt = request.args.get("format")
    if fmt:
        return rows_file(
            fmt,
            ["食堂", "食堂所属单位", "跨单位", "笔数", "金额"],
            ["text", "text", "text", "int", "fen"],
            [
                [
                    d["canteen_name"],
                    d["host_unit_name"],
                    "是" if d["cross_unit"] else "否",
                    d["count"],
                    d["amount_fen"],
                ]
                for d in dining
            ],
            f"本单位职工就餐-{q}",
        )
    status = allocation_rows(str(q), unit_id)
    return render_template(
        "clerk/home.html",
        unit=unit,
        quarter=str(q),
        quarters=recent_quarters(q),
        staff=staff_summary(unit_id),
        status=status["units"][0] if status["units"] else None,
        due_ms=status["due_ms"],
        history=allocation_history(unit_id),
        quality=quality.quality_report(conn, str(q), canteen_filter(conn))["canteens"],
        dining=dining,
        dining_total={
            "count": sum(d["count"] for d in dining),
            "amount_fen": sum(d["amount_fen"] for d in dining),
            "cross_fen": sum(d["amount_fen"] for d in dining if d["cross_unit"]),
        },
    )


# --- entering a quality score ---------------------------------------------------------------


class ScoreForm(Form):
    canteen_id = SelectField("食堂")
    quarter = SelectField("季度")
    score = IntegerField(
        "质量评分（0–100）",
        description="本单位对食堂经营者本季度的考核评分；结算时按评分对应的比例支付",
        validators=[InputRequired("请填写评分"), NumberRange(0, 100, "评分须在 0 到 100 之间")],
    )


@bp.route("/quality/score", methods=["GET", "POST"])
@page("admin", "clerk")
def score() -> Response | tuple[str, int]:
    conn = get_db()
    scope = canteen_filter(conn)
    canteens = canteens_of(conn, scope)
    q = quarter_arg()
    form = ScoreForm()
    form.canteen_id.choices = [(c["id"], f"{c['name']}（{c['id']}）") for c in canteens]
    form.quarter.choices = [(x, x) for x in recent_quarters(q)]
    if request.method == "GET":
        form.quarter.data = str(q)
        form.canteen_id.data = request.args.get("canteen_id")
    if form.validate_on_submit():
        try:
            require_canteen_access(conn, form.canteen_id.data)
            with write_txn(conn):
                done = quality.set_score(
                    conn,
                    form.canteen_id.data,
                    form.quarter.data,
                    int(form.score.data or 0),  # InputRequired: never None here
                    get_clock().now_ms(),
                    f"web:{principal().label}",
                )
        except DomainError as exc:
            if exc.code == "forbidden":
                raise
            if exc.code == "period_closed":
                exc = DomainError(exc.code, exc.detail, zh="该季度已结算，评分不能再修改")
            refuse(form, exc, "quarter" if exc.code == "period_closed" else "score")
        else:
            flash(
                f"已录入 {done['quarter']} 质量评分 {done['score']} 分，结算时按 {done['pay_pct']}% 支付。",
                "success",
            )
            target = "web_clerk.home" if principal().role == "clerk" else "web_reports.quality"
            return redirect(url_for(target, quarter=done["quarter"]))  # type: ignore[return-value]
    return render_template("clerk/score.html", form=form), status_of(form)
