"""The staff roster (人员名单) imported by upload: preview, then confirm (admin; a unit's clerk
for their own unit only).

The roster is read and checked by :func:`server.registry.roster.import_roster`, the same
function ``POST /api/v1/roster/import`` and ``canteen-server roster-import`` call; a clerk's
file may name only their own unit (the service refuses other units' lines). The steps —
upload, preview that writes nothing, confirm exactly what was previewed — are
:mod:`server.web.imports`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from flask import Response, render_template

from server.infra.auth import actor_id_of
from server.infra.db_flask import get_db
from server.infra.scope import principal
from server.registry import roster
from server.web import imports
from server.web.blueprint import web_blueprint
from server.web.forms import refuse
from server.web.guard import page

bp = web_blueprint("web_roster", __name__)


def _run(conn: sqlite3.Connection, text: str, now_ms: int, dry_run: bool, options: dict[str, Any]) -> dict:
    who = principal()
    return roster.import_roster(
        conn,
        text,
        now_ms,
        unit_scope=who.unit_id if who.role == "clerk" else None,
        dry_run=dry_run,
        changed_by=actor_id_of(who),
    )


ROSTER = imports.Importer("roster", _run)


def summary(report: dict[str, Any]) -> str:
    """What an import did (or would do), in one sentence."""
    parts = [
        ("new_holders", "新增人员"),
        ("renamed", "更正姓名"),
        ("issued", "发卡"),
        ("retired", "注销旧卡"),
        ("bank_accounts", "登记银行卡"),
        ("unchanged", "无变化"),
    ]
    return "，".join(f"{label} {report.get(key, 0)} 人" for key, label in parts)


def _page(form: imports.UploadForm, outcome: imports.Outcome | None) -> tuple[str, int]:
    who = principal()
    unit = None
    if who.role == "clerk":
        unit = get_db().execute("SELECT name FROM units WHERE id = ?", (who.unit_id,)).fetchone()
    html = render_template(
        "registry/roster_import.html",
        form=form,
        outcome=outcome,
        confirm=imports.ConfirmForm(digest=outcome.digest) if outcome and outcome.digest else None,
        summary=summary,
        unit_name=unit["name"] if unit else None,
        limit=imports.PREVIEW_ROWS,
    )
    refused = bool(form.errors or form.form_errors or (outcome and outcome.errors))
    return html, 400 if refused else 200


@bp.route("/roster/import", methods=["GET", "POST"])
@page("admin", "clerk")
def upload() -> tuple[str, int]:
    form = imports.UploadForm()
    return _page(form, imports.preview_posted(ROSTER, form, refuse))


@bp.post("/roster/import/confirm")
@page("admin", "clerk")
def confirm() -> Response | tuple[str, int]:
    return imports.confirm_posted(
        ROSTER,
        imports.UploadForm(formdata=None),
        _page,
        refuse,
        lambda report: f"名单已导入：{summary(report)}。",
        "web_people.search",
    )
