"""The bureau's dashboard (admin, auditor): today's takings, the 15-minute chart, terminals,
alerts (:mod:`server.web.dashboard_data`); and running the ledger check now (admin)."""

from __future__ import annotations

from flask import Response, flash, redirect, render_template, url_for

from server.closing.check import all_violations, record_check
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal
from server.web.blueprint import web_blueprint
from server.web.charts import slot_chart
from server.web.dashboard_data import dashboard as gather
from server.web.guard import page

bp = web_blueprint("web_dashboard", __name__)


@bp.get("/dashboard")
@page("admin", "auditor")
def dashboard() -> str:
    data = gather(get_db(), get_clock().now_ms())
    chart = slot_chart(data["series"], "今日每 15 分钟销售额（柱）与上周同日（线）", "sales-chart")
    return render_template("web/dashboard.html", d=data, chart=chart)


@bp.post("/dashboard/check")
@page("admin")
def run_check() -> Response:
    """Run the ledger check now and record its result (an auditor reads the last one)."""
    conn = get_db()
    violations = all_violations(conn)
    who = principal()
    record_check(conn, violations, get_clock().now_ms(), f"web:{who.label}")
    if violations:
        flash(f"账本检查发现 {len(violations)} 处问题，请查看 canteen-server check 的明细。", "error")
    else:
        flash("账本检查通过：所有账目平衡。", "success")
    return redirect(url_for("web_dashboard.dashboard"))  # type: ignore[return-value]
