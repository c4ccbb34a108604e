"""Rating a meal (评价, 方案 三(一)4): a diner rates service and food 1–5, with an optional
comment, for one of their own applied sales, once — the rule and its refusals are
:func:`server.closing.quality.rate`'s, the same the API's ``POST /api/v1/ratings`` uses. The
averages feed the canteens' quality report."""

from __future__ import annotations

import sqlite3

from flask import Response, flash, redirect, render_template, url_for
from wtforms import RadioField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from server.closing import quality
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.web import history
from server.web.blueprint import web_blueprint
from server.web.diner_common import TABS, me
from server.web.forms import Form, refuse, status_of
from server.web.guard import page
from shared.errors import DomainError

bp = web_blueprint("web_diner_rate", __name__)

LABELS = {5: "5 分 很满意", 4: "4 分 满意", 3: "3 分 一般", 2: "2 分 不满意", 1: "1 分 很不满意"}
POINTS = [SelectChoice(v, label) for v, label in LABELS.items()]  # type: ignore[arg-type]  # coerced to int
CHOOSE = "请选择分数"


class RatingForm(Form):
    service = RadioField("服务", choices=POINTS, coerce=int, validators=[DataRequired(CHOOSE)])
    food = RadioField("饭菜", choices=POINTS, coerce=int, validators=[DataRequired(CHOOSE)])
    comment = TextAreaField(
        "意见或建议（可不填）",
        description=f"最多 {quality.MAX_COMMENT_CHARS} 字",
        validators=[Length(max=quality.MAX_COMMENT_CHARS, message=f"最多 {quality.MAX_COMMENT_CHARS} 字")],
    )


def rated_keys(conn: sqlite3.Connection, rows: list[dict]) -> set[tuple[str, int]]:
    """Which of these sales (``terminal_id``, ``seq``) already have a rating."""
    keys = {(r["terminal_id"], r["seq"]) for r in rows}
    if not keys:
        return set()
    marks = ", ".join("(?, ?)" for _ in keys)
    found = conn.execute(
        f"SELECT terminal_id, seq FROM ratings WHERE (terminal_id, seq) IN (VALUES {marks})",
        [v for k in sorted(keys) for v in k],
    )
    return {(r[0], r[1]) for r in found}


def _own_sale(conn: sqlite3.Connection, holder_id: str, sale_uuid: str) -> dict:
    """The diner's own applied sale, as the history shows it; another's is refused."""
    row = conn.execute(
        f"{history.HISTORY.select_sql} WHERE s.uuid = ? AND s.status = 'applied'", (sale_uuid,)
    ).fetchone()
    if row is None:
        raise DomainError("not_found", f"sale {sale_uuid}")
    owner = conn.execute("SELECT holder_id FROM sales WHERE uuid = ?", (sale_uuid,)).fetchone()[0]
    if owner != holder_id:
        raise DomainError("not_your_sale", sale_uuid)
    return history.decorate([dict(row)])[0]


@bp.route("/me/sales/<sale_uuid>/rate", methods=["GET", "POST"])
@page("diner")
def rate(sale_uuid: str) -> Response | tuple[str, int]:
    conn = get_db()
    holder = me(conn)
    sale = _own_sale(conn, holder["id"], sale_uuid)
    given = conn.execute(
        "SELECT service, food, comment, at_ms FROM ratings WHERE terminal_id = ? AND seq = ?",
        (sale["terminal_id"], sale["seq"]),
    ).fetchone()
    form = RatingForm()
    if given is None and form.validate_on_submit():
        try:
            with write_txn(conn):
                quality.rate(
                    conn,
                    holder["id"],
                    sale_uuid,
                    form.service.data,
                    form.food.data,
                    form.comment.data or "",
                    get_clock().now_ms(),
                )
        except DomainError as exc:
            refuse(form, exc, "comment" if exc.code == "invalid_input" else None)
        else:
            flash("感谢您的评价！", "success")
            return redirect(url_for("web_diner.home"))  # type: ignore[return-value]
    page_ = render_template("web/diner_rate.html", tabs=TABS, sale=sale, form=form, given=given)
    return page_, status_of(form)
