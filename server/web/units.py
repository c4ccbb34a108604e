"""Units (单位): the list, a unit's page, adding one and changing its name or per-person
quarterly meal-fund standard (admin; the auditor reads).

Over :mod:`server.registry.units` — ``add_unit`` / ``update_unit`` as ``POST`` and ``PATCH
/api/v1/units`` call them; a new standard applies to allocations made after the change.
"""

from __future__ import annotations

import sqlite3

from flask import Response, flash, redirect, render_template, request, url_for
from wtforms import StringField
from wtforms.validators import DataRequired, InputRequired, Length

from server.infra.db import write_txn
from server.infra.db_flask import get_db
from server.infra.scope import require_unit_access
from server.registry import units as registry
from server.web.blueprint import web_blueprint
from server.web.downloads import table_download
from server.web.forms import Form, new_id_rules, refuse_explained
from server.web.guard import page
from server.web.tables import Column, Table, TableQuery, fetch, fetch_all, like
from server.web.yuan_field import YuanField
from shared.errors import DomainError

bp = web_blueprint("web_units", __name__)

UNITS = Table(
    name="units",
    columns=(
        Column("id", "编号", "u.id", link=("web_units.unit", "unit_id", "id")),
        Column("name", "单位名称", "u.name", link=("web_units.unit", "unit_id", "id")),
        Column("quarterly_standard_fen", "每人每季度就餐经费", "u.quarterly_standard_fen", "fen"),
        Column("active_holders", "在职人数", "active_holders", "int"),
        Column("canteens", "食堂数", "canteens", "int"),
    ),
    select_sql=(
        "SELECT u.id AS id, u.name AS name, u.quarterly_standard_fen AS quarterly_standard_fen, "
        "(SELECT count(*) FROM holders h WHERE h.unit_id = u.id AND h.status = 'active') AS active_holders, "
        "(SELECT count(*) FROM canteens c WHERE c.unit_id = u.id) AS canteens FROM units u"
    ),
    default_sort="id",
    tie_break="u.id",
    search_sql="(u.name LIKE ? ESCAPE '\\' OR u.id = ?)",
    search_args=lambda q: [like(q), q],
    search_label="单位名称或编号",
)
REQUIRED = "请填写此项"


class UnitForm(Form):
    name = StringField("单位名称", validators=[DataRequired(REQUIRED), Length(max=64, message="名称过长")])
    quarterly_standard = YuanField(
        "每人每季度就餐经费（元）",
        description="如 300 或 300.00；按季度拨付时每人按此标准",
        validators=[InputRequired(REQUIRED)],
    )


class NewUnitForm(UnitForm):
    unit_id = StringField(
        "单位编号",
        description="可不填，自动编为 U0001 这样的编号；只能用字母、数字、- 和 _",
        validators=new_id_rules("编号过长"),
    )


def _list_page(new_form: NewUnitForm) -> tuple[str, int]:
    conn = get_db()
    table = fetch(conn, UNITS, TableQuery.from_args(UNITS, request.args))
    return render_template("registry/units.html", table=table, form=new_form), 400 if new_form.errors else 200


@bp.get("/units")
@page("admin", "auditor")
def units() -> str | Response | tuple[str, int]:
    if request.args.get("format"):
        conn = get_db()
        return table_download(
            UNITS, fetch_all(conn, UNITS, TableQuery.from_args(UNITS, request.args)), "单位"
        )
    return _list_page(NewUnitForm(formdata=None))


@bp.post("/units")
@page("admin")
def add() -> Response | tuple[str, int]:
    form = NewUnitForm()
    if form.validate_on_submit():
        conn = get_db()
        try:
            with write_txn(conn):
                unit_id = (form.unit_id.data or "").strip() or registry.next_id(conn, "units", "U")
                registry.add_unit(conn, unit_id, form.name.data, form.quarterly_standard.data)
        except DomainError as exc:
            refuse_explained(form, exc, "unit_id" if exc.code == "already_exists" else "name")
        else:
            flash(f"已添加单位 {form.name.data.strip()}（{unit_id}）。", "success")
            return redirect(url_for("web_units.unit", unit_id=unit_id))  # type: ignore[return-value]
    return _list_page(form)


def _unit_page(conn: sqlite3.Connection, row: sqlite3.Row, form: UnitForm | None = None) -> tuple[str, int]:
    shown = form or UnitForm(
        formdata=None, name=row["name"], quarterly_standard=row["quarterly_standard_fen"]
    )
    canteens = conn.execute(
        "SELECT id, name, location, operator FROM canteens WHERE unit_id = ? ORDER BY name", (row["id"],)
    ).fetchall()
    html = render_template(
        "registry/unit.html", unit=registry.unit_json(conn, row), canteens=canteens, form=shown
    )
    return html, 400 if shown.errors else 200


@bp.get("/units/<unit_id>")
@page("admin", "auditor")
def unit(unit_id: str) -> tuple[str, int]:
    conn = get_db()
    return _unit_page(conn, require_unit_access(conn, unit_id))


@bp.post("/units/<unit_id>")
@page("admin")
def update(unit_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_unit_access(conn, unit_id)
    form = UnitForm()
    if form.validate_on_submit():
        try:
            with write_txn(conn):
                registry.update_unit(
                    conn, unit_id, name=form.name.data, quarterly_standard_fen=form.quarterly_standard.data
                )
        except DomainError as exc:
            refuse_explained(form, exc, "name")
        else:
            flash("已保存。", "success")
            return redirect(url_for("web_units.unit", unit_id=unit_id))  # type: ignore[return-value]
    return _unit_page(conn, row, form)
