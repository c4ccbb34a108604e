"""The public canteen directory (no log-in): where each canteen is, whom to call, its meal
times and prices (方案 四(二)3), searchable by name, unit or address. The list is the one
the API serves (:func:`server.registry.canteens.directory`)."""

from __future__ import annotations

from flask import render_template, request

from server.infra.db_flask import get_db
from server.registry.canteens import directory as canteen_directory
from server.web.blueprint import web_blueprint
from server.web.guard import public_page

bp = web_blueprint("web_directory", __name__)


def matches(entry: dict, q: str) -> bool:
    text = " ".join(str(entry.get(k) or "") for k in ("name", "unit", "location", "contact", "phone"))
    return q.casefold() in text.casefold()


@bp.get("/directory")
@public_page
def directory() -> str:
    q = (request.args.get("q") or "").strip()[:64]
    entries = canteen_directory(get_db())
    shown = [e for e in entries if matches(e, q)] if q else entries
    return render_template("web/directory.html", entries=shown, total=len(entries), q=q)
