"""The canteen operator's pages (食堂运营方): their canteens only — today's and the quarter's
takings, the settled quarters' statements, the diners' ratings with their comments, and the
shop items with their prices (to view; the bureau sets them).

The operator's canteens are the API's scope (:func:`~server.infra.scope.canteen_filter`:
the canteens whose operator is theirs); the figures come from the API's report functions
(:func:`server.closing.reports.sales_totals`, :func:`server.closing.settlement.settlement_document`).
Ratings are shown without the diner (the operator learns what was said, not who said it).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, render_template, request

from server.books.periods import Quarter
from server.closing import reports, settlement
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import canteen_filter
from server.web.blueprint import web_blueprint
from server.web.downloads import table_download
from server.web.fmt import meal_zh
from server.web.guard import page
from server.web.periods import quarter_arg, recent_quarters
from server.web.tables import Column, Table, TableQuery, fetch, fetch_all, like
from shared.clock import DAY_MS, start_of_china_day_ms

bp = web_blueprint("web_operator", __name__)

RATINGS = Table(
    name="ratings",
    columns=(
        Column("at_ms", "评价时间", "r.at_ms", "time"),
        Column("canteen_name", "食堂", "c.name"),
        Column("meal", "餐次"),
        Column("service", "服务", "r.service", "int"),
        Column("food", "菜品", "r.food", "int"),
        Column("comment", "留言"),
    ),
    select_sql=(
        "SELECT r.at_ms AS at_ms, c.name AS canteen_name, s.kind AS kind, s.meal_period AS meal_period, "
        "r.service AS service, r.food AS food, r.comment AS comment, r.quarter AS quarter "
        "FROM ratings r JOIN canteens c ON c.id = r.canteen_id "
        "LEFT JOIN sales s ON s.terminal_id = r.terminal_id AND s.seq = r.seq"
    ),
    default_sort="at_ms",
    default_desc=True,
    tie_break="(r.terminal_id || ':' || r.seq)",
    search_sql="(r.comment LIKE ? ESCAPE '\\' OR c.name LIKE ? ESCAPE '\\')",
    search_args=lambda q: [like(q), like(q)],
    page_size=20,
    search_label="按留言或食堂查找",
)


def my_canteens() -> list[dict[str, Any]]:
    conn = get_db()
    ids = canteen_filter(conn) or []
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    return [dict(r) for r in conn.execute(f"SELECT * FROM canteens WHERE id IN ({marks}) ORDER BY id", ids)]


def shop_items(canteens: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every canteen's shop items: name, price, reference price, barcodes."""
    out = []
    for c in canteens:
        items = json.loads(c["config_json"]).get("items") or {}
        for sku, item in sorted(items.items()):
            out.append({"canteen_name": c["name"], "sku": sku, **item})
    return out


def statements_of(ids: list[str]) -> list[dict[str, Any]]:
    """Their canteens' statements of every settled quarter, newest first."""
    conn = get_db()
    out = []
    for (quarter,) in conn.execute("SELECT quarter FROM settlement_periods ORDER BY end_ms DESC").fetchall():
        doc = settlement.settlement_document(conn, quarter, ids)
        if doc is not None:
            out.extend({**st, "quarter": quarter} for st in doc["statements"])
    return out


@bp.get("/operator")
@page("operator")
def home() -> str:
    conn = get_db()
    canteens = my_canteens()
    ids = [c["id"] for c in canteens]
    now = get_clock().now_ms()
    today = start_of_china_day_ms(now)
    q = quarter_arg()
    return render_template(
        "operator/home.html",
        canteens=canteens,
        today=reports.sales_totals(conn, today, today + DAY_MS, ids),
        today_ms=today,
        quarter_totals=reports.sales_totals(conn, q.start_ms, q.end_ms, ids),
        quarter=str(q),
        quarters=recent_quarters(q),
        current_quarter=str(Quarter.of_ms(now)),
        statements=statements_of(ids),
        shop_items=shop_items(canteens),
    )


@bp.get("/operator/ratings")
@page("operator")
def ratings() -> str | Response:
    conn = get_db()
    ids = [c["id"] for c in my_canteens()] or [""]
    where = f"r.canteen_id IN ({', '.join('?' for _ in ids)})"
    query = TableQuery.from_args(RATINGS, request.args)
    if request.args.get("format"):
        return table_download(RATINGS, _decorate(fetch_all(conn, RATINGS, query, where, ids)), "就餐评价")
    rated = fetch(conn, RATINGS, query, where, ids)
    _decorate(rated.rows)
    return render_template("operator/ratings.html", ratings=rated)


def _decorate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r["meal"] = meal_zh(r["meal_period"]) if r["kind"] == "meal" else "商品"
    return rows
