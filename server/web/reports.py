"""Reports (read only): daily and quarterly takings, the cross-unit dining matrix as a heat
map, quality and ratings, overdrafts, blocked cards and payment methods — each downloadable
as CSV and Excel (``?format=csv|xlsx`` on the page's own address).

Every figure comes from the report function the API and CLI use
(:mod:`server.closing.reports`, :func:`server.closing.quality.quality_report`,
:func:`server.sales.ecny.method_totals`), and each page serves the roles and scopes the API's
report serves: an operator sees their own canteens (:func:`~server.infra.scope.canteen_filter`),
a clerk their own unit (:func:`~server.infra.scope.unit_filter`).
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, render_template, request

from server.closing import reports
from server.closing.quality import quality_report
from server.infra.db_flask import get_db
from server.infra.scope import canteen_filter, principal, unit_filter
from server.sales.ecny import method_totals
from server.web.blueprint import web_blueprint
from server.web.downloads import rows_file, table_download
from server.web.fmt import method_zh
from server.web.guard import page, roles_of
from server.web.heatmap import heat_grid
from server.web.lists import list_table, page_of, rows_of
from server.web.periods import day_arg, quarter_arg, recent_quarters
from server.web.scoped import canteens_of
from server.web.tables import Column
from shared.errors import DomainError
from shared.money import format_fen

bp = web_blueprint("web_reports", __name__)

TOTAL_KEYS = ("count", "amount_fen", "subsidy_fen", "self_fen", "ecny_fen")
TOTAL_HEADERS = ["笔数", "金额", "就餐经费支付", "自费支付", "数字人民币"]
TOTAL_KINDS = ["int", "fen", "fen", "fen", "fen"]
BLOCK_REASONS = {
    "card_lost": "已挂失",
    "card_retired": "已注销",
    "holder_left": "已离职",
    "holder_blocked": "已停用",
    "overdraft": "透支未补足",
}
PERSON_LINK = ("web_people.person", "holder_id", "holder_id")

QUALITY = list_table(
    "quality",
    (
        Column("canteen_name", "食堂", "canteen_name"),
        Column("unit_name", "所属单位", "unit_name"),
        Column("operator", "经营者", "operator"),
        Column("score", "质量评分", "score", "int"),
        Column("pay_pct", "支付比例(%)", "pay_pct", "int"),
        Column("ratings", "评价数", "ratings", "int"),
        Column("service_avg", "服务均分", "service_avg"),
        Column("food_avg", "菜品均分", "food_avg"),
    ),
    "canteen_name",
    search_keys=("canteen_name", "unit_name", "operator"),
    search_label="按食堂、单位或经营者查找",
)
OVERDRAFTS = list_table(
    "overdrafts",
    (
        Column("name", "姓名", "name", link=PERSON_LINK),
        Column("unit_name", "单位", "unit_name"),
        Column("self_fen", "自费余额", "self_fen", "fen"),
        Column("subsidy_fen", "就餐经费余额", "subsidy_fen", "fen"),
        Column("overdraft_sales", "透支笔数", "overdraft_sales", "int"),
        Column("overdraft_recorded_fen", "记录的透支金额", "overdraft_recorded_fen", "fen"),
    ),
    "self_fen",
    search_keys=("name", "unit_name", "holder_id"),
    search_label="按姓名或单位查找",
)
BLOCKED = list_table(
    "blocked",
    (
        Column("card_id", "卡号", "card_id"),
        Column("name", "姓名", "name", link=PERSON_LINK),
        Column("unit_name", "单位", "unit_name"),
        Column("reasons_zh", "原因", "reasons_zh"),
        Column("self_fen", "自费余额", "self_fen", "fen"),
    ),
    "card_id",
    search_keys=("card_id", "name", "unit_name", "reasons_zh"),
    search_label="按卡号、姓名、单位或原因查找",
)
# the reports, for the index: (endpoint, title, what it shows)
REPORTS = (
    ("web_reports.daily", "日报", "某一天各食堂和各单位的消费"),
    ("web_reports.quarterly", "季报", "一个季度各食堂和各单位的消费"),
    ("web_reports.matrix", "跨单位就餐热力图", "各单位职工在各食堂的就餐金额"),
    ("web_reports.quality", "质量与评价", "质量评分、支付比例和就餐人员评价"),
    ("web_reports.overdrafts", "透支", "离线消费造成自费余额为负的人员"),
    ("web_reports.blocked", "停用的卡", "终端会拒绝的卡及原因"),
    ("web_reports.methods", "支付方式", "刷卡、扫码、刷脸、数字人民币各自的金额"),
)


def _names(sql: str) -> dict[str, str]:
    return {r[0]: r[1] for r in get_db().execute(sql)}


def unit_names() -> dict[str, str]:
    return _names("SELECT id, name FROM units")


@bp.get("/reports")
@page("admin", "auditor", "clerk", "operator")
def index() -> str:
    role = principal().role
    shown = [r for r in REPORTS if role in (roles_of(current_app.view_functions.get(r[0])) or ())]
    return render_template("reports/index.html", reports=shown)


# --- takings --------------------------------------------------------------------------------


def _totals_download(data: dict[str, Any], stem: str) -> Response:
    which = request.args.get("table", "canteens")
    if which == "units":
        headers, key, name = ["单位编号", "单位"], "unit_id", "unit_name"
        rows = data["units"]
    else:
        headers, key, name = ["食堂编号", "食堂"], "canteen_id", "canteen_name"
        rows = data["canteens"]
    return rows_file(
        request.args.get("format", ""),
        [*headers, *TOTAL_HEADERS],
        ["text", "text", *TOTAL_KINDS],
        [[r[key], r[name], *(r[k] for k in TOTAL_KEYS)] for r in rows],
        f"{stem}-{'单位' if which == 'units' else '食堂'}",
    )


@bp.get("/reports/daily")
@page("admin", "auditor", "operator")
def daily() -> str | Response:
    conn = get_db()
    day, start, end = day_arg()
    data = reports.sales_totals(conn, start, end, canteen_filter(conn))
    if request.args.get("format"):
        return _totals_download(data, f"日报-{day}")
    return render_template("reports/totals.html", data=data, day=day, title=f"{day} 日报", args={"date": day})


@bp.get("/reports/quarterly")
@page("admin", "auditor", "operator")
def quarterly() -> str | Response:
    conn = get_db()
    q = quarter_arg()
    data = reports.sales_totals(conn, q.start_ms, q.end_ms, canteen_filter(conn))
    if request.args.get("format"):
        return _totals_download(data, f"季报-{q}")
    return render_template(
        "reports/totals.html",
        data=data,
        quarter=str(q),
        quarters=recent_quarters(q),
        title=f"{q} 季报",
        args={"quarter": str(q)},
    )


# --- the dining matrix ----------------------------------------------------------------------


@bp.get("/reports/matrix")
@page("admin", "auditor")
def matrix() -> str | Response:
    conn = get_db()
    q = quarter_arg()
    data = reports.dining_matrix(conn, q.start_ms, q.end_ms)
    canteens = {r["id"]: dict(r) for r in conn.execute("SELECT id, name, unit_id FROM canteens")}
    units = unit_names()
    if request.args.get("format"):
        rows = [
            [
                units.get(c["diner_unit_id"], c["diner_unit_id"]),
                (canteens.get(c["canteen_id"]) or {}).get("name", c["canteen_id"]),
                units.get(c["host_unit_id"] or "", c["host_unit_id"] or ""),
                "是" if c["cross_unit"] else "否",
                c["count"],
                c["amount_fen"],
            ]
            for c in data["cells"]
        ]
        return rows_file(
            request.args.get("format", ""),
            ["就餐人员单位", "食堂", "食堂所属单位", "跨单位", "笔数", "金额"],
            ["text", "text", "text", "text", "int", "fen"],
            rows,
            f"跨单位就餐-{q}",
        )
    return render_template(
        "reports/matrix.html",
        data=data,
        grid=heat_grid(data, units, canteens),
        quarter=str(q),
        quarters=recent_quarters(q),
    )


# --- quality --------------------------------------------------------------------------------


@bp.get("/reports/quality")
@page("admin", "auditor", "clerk", "operator")
def quality() -> str | Response:
    conn = get_db()
    q = quarter_arg()
    data = quality_report(conn, str(q), canteen_filter(conn))
    units = unit_names()
    for r in data["canteens"]:
        r["unit_name"] = units.get(r["unit_id"], r["unit_id"])
    query = QUALITY.query(request.args)
    if request.args.get("format"):
        return table_download(QUALITY.table, rows_of(QUALITY, data["canteens"], query), f"质量与评价-{q}")
    return render_template(
        "reports/list.html",
        title=f"{q} 质量与评价",
        intro="各食堂本季度的质量评分（由所属单位录入）、对应的支付比例，以及就餐人员的评价（1–5 分）。",
        table=page_of(QUALITY, data["canteens"], query),
        endpoint="web_reports.quality",
        args={"quarter": str(q)},
        quarter=str(q),
        quarters=recent_quarters(q),
    )


# --- overdrafts and blocked cards -------------------------------------------------------------


@bp.get("/reports/overdrafts")
@page("admin", "auditor", "clerk")
def overdrafts() -> str | Response:
    data = reports.overdrafts(get_db(), unit_filter())
    units = unit_names()
    for h in data["holders"]:
        h["unit_name"] = units.get(h["unit_id"], h["unit_id"])
    query = OVERDRAFTS.query(request.args)
    if request.args.get("format"):
        return table_download(OVERDRAFTS.table, rows_of(OVERDRAFTS, data["holders"], query), "透支人员")
    return render_template(
        "reports/list.html",
        title="透支人员",
        intro=f"离线消费使自费余额低于零的人员共 {len(data['holders'])} 人，透支合计 "
        f"{format_fen(data['total_overdrawn_fen'])}；他们的卡在充值补足前不能消费。",
        table=page_of(OVERDRAFTS, data["holders"], query),
        endpoint="web_reports.overdrafts",
        args={},
    )


@bp.get("/reports/blocked-cards")
@page("admin", "auditor", "clerk")
def blocked() -> str | Response:
    data = reports.blocked_cards(get_db(), unit_filter())
    units = unit_names()
    for c in data["cards"]:
        c["unit_name"] = units.get(c["unit_id"], c["unit_id"])
        c["reasons_zh"] = "、".join(BLOCK_REASONS.get(str(r), str(r)) for r in c["reasons"])
    query = BLOCKED.query(request.args)
    if request.args.get("format"):
        return table_download(BLOCKED.table, rows_of(BLOCKED, data["cards"], query), "停用的卡")
    return render_template(
        "reports/list.html",
        title="停用的卡",
        intro=f"终端会拒绝的卡共 {len(data['cards'])} 张："
        "挂失或注销的卡、离职或被停用人员的卡、透支未补足的卡。",
        table=page_of(BLOCKED, data["cards"], query),
        endpoint="web_reports.blocked",
        args={},
    )


# --- payment methods ------------------------------------------------------------------------


@bp.get("/reports/methods")
@page("admin", "auditor", "operator")
def methods() -> str | Response:
    conn = get_db()
    q = quarter_arg()
    scope = canteen_filter(conn)
    canteens = canteens_of(conn, scope)
    chosen = request.args.get("canteen_id") or None
    if chosen is None and scope is not None:
        chosen = canteens[0]["id"] if canteens else None
        if chosen is None:
            raise DomainError("not_found", "no canteen in your scope")
    if chosen is not None and chosen not in [c["id"] for c in canteens]:
        raise DomainError("unknown_canteen", chosen) if scope is None else DomainError("forbidden", chosen)
    data = method_totals(conn, chosen, q.start_ms, q.end_ms)
    rows = [
        {"method": m, "method_zh": method_zh(m), "count": v["count"], "amount_fen": v["amount_fen"]}
        for m, v in data["methods"].items()
    ]
    if request.args.get("format"):
        lines = [[r["method_zh"], r["count"], r["amount_fen"]] for r in rows]
        if data["ecny_refunds"]["count"]:
            lines.append(
                ["数字人民币退款", data["ecny_refunds"]["count"], -data["ecny_refunds"]["amount_fen"]]
            )
        return rows_file(
            request.args.get("format", ""),
            ["支付方式", "笔数", "金额"],
            ["text", "int", "fen"],
            lines,
            f"支付方式-{q}",
        )
    args: dict[str, Any] = {"quarter": str(q)}
    if chosen:
        args["canteen_id"] = chosen
    return render_template(
        "reports/methods.html",
        data=data,
        rows=rows,
        canteens=canteens,
        chosen=chosen,
        all_allowed=scope is None,
        quarter=str(q),
        quarters=recent_quarters(q),
        args=args,
    )
