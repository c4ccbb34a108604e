"""The diner's portal (phone first, 360 px wide): both purses — what of the subsidy expires
at the end of the year — and their sales, showing which purse paid, each with a link to rate
it (once). A diner sees only themselves: the page reads the signed-in principal's holder,
through the API's scope check. The portal's other pages: the pay code
(:mod:`server.web.diner_pay`), top-up (:mod:`server.web.diner_topup`), the card and payment
PIN (:mod:`server.web.diner_card`), rating a meal (:mod:`server.web.diner_rate`)."""

from __future__ import annotations

from flask import render_template, request

from server.books.periods import year_of_ms
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal, require_holder_access
from server.registry.people import holder_json
from server.web import history
from server.web.blueprint import web_blueprint
from server.web.diner_common import TABS, active_card
from server.web.diner_rate import rated_keys
from server.web.guard import page
from server.web.tables import TableQuery, fetch

bp = web_blueprint("web_diner", __name__)


def purses(by_year: dict[str, int], self_fen: int, year: int) -> dict[str, int]:
    """The subsidy split by when it can be spent: this year's (cleared at the year end), last
    years' (expired, waiting for the year-end clearing) and next year's (from 1 January)."""
    this = sum(v for y, v in by_year.items() if int(y) == year)
    return {
        "subsidy_fen": this,
        "expires_at_year_end_fen": this,
        "expired_fen": sum(v for y, v in by_year.items() if int(y) < year),
        "next_year_fen": sum(v for y, v in by_year.items() if int(y) > year),
        "self_fen": self_fen,
    }


@bp.get("/me")
@page("diner")
def home() -> str:
    conn = get_db()
    holder = require_holder_access(conn, principal().holder_id or "")
    info = holder_json(conn, holder)
    now = get_clock().now_ms()
    year = year_of_ms(now)
    unit = conn.execute("SELECT name FROM units WHERE id = ?", (holder["unit_id"],)).fetchone()
    query = TableQuery.from_args(history.HISTORY, request.args)
    sales = fetch(conn, history.HISTORY, query, history.WHERE, [holder["id"]])
    history.decorate(sales.rows)
    rated = rated_keys(conn, sales.rows)
    for row in sales.rows:
        row["rated"] = (row["terminal_id"], row["seq"]) in rated
    return render_template(
        "web/diner_home.html",
        holder=info,
        unit_name=unit["name"] if unit else holder["unit_id"],
        p=purses(info["subsidy_by_year"], info["self_fen"], year),
        year=year,
        sales=sales,
        tabs=TABS,
        card=active_card(conn, holder["id"]),
    )
