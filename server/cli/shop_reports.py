"""``canteen-server report shop`` and ``report day-closes``: the canteen shops' sales and the
terminals' day closes (issue 13). Registered on the ``report`` group by :mod:`server.cli.root`.

* ``report shop [QUARTER | --date D] [--by item|canteen] [--per-day] [--canteen C] [--csv F]``
  — shop sales by item (per canteen) or by canteen, for a quarter or one day, optionally
  one row per day (:func:`server.closing.reports.shop_sales`);
* ``report day-closes [--date D] [--terminal T]`` — every Z-report a terminal sent, compared
  now with the sales the server holds for it: 一致 matched, 等待 waiting (sales not yet
  received), 不一致 mismatch (``day_close_mismatch``, with the differences)
  (:mod:`server.closing.day_closes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from server.books.periods import Quarter, day_bounds_ms
from server.cli.money import quarter_argument
from server.cli.output import JSON_OPTION, emit
from server.closing import day_closes, reports
from shared.errors import DomainError
from shared.money import format_fen

STATUS_ZH = {"matched": "一致", "waiting": "等待上传", "mismatch": "不一致"}


def _db(obj: Any) -> Any:
    return obj.db()


def _quarter(obj: Any, quarter: str | None, quarter_opt: str | None) -> Quarter:
    given = quarter or quarter_opt
    return Quarter.parse(given) if given else Quarter.of_ms(int(obj.app.extensions["canteen_clock"].now_ms()))


@click.command("shop")
@quarter_argument
@click.option("--date", "day", default=None, help="One Beijing date YYYY-MM-DD instead of a quarter.")
@click.option("--canteen", "canteen_id", default=None, help="Only this canteen.")
@click.option(
    "--by",
    type=click.Choice(reports.SHOP_GROUPINGS),
    default="item",
    show_default=True,
    help="One row per item of each canteen, or one per canteen.",
)
@click.option("--per-day", is_flag=True, help="One row per Beijing day as well.")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the report as CSV (UTF-8 with BOM, formula-safe) to FILE.",
)
@JSON_OPTION
@click.pass_obj
def shop_report(
    obj: Any,
    quarter: str | None,
    quarter_opt: str | None,
    day: str | None,
    canteen_id: str | None,
    by: str,
    per_day: bool,
    csv_file: str | None,
    as_json: bool,
) -> None:
    """Shop sales by item or by canteen: for QUARTER (default: this quarter) or one --date."""
    if day is not None and (quarter or quarter_opt):
        raise click.UsageError("give a QUARTER or --date, not both")
    if day is not None:
        start, end = day_bounds_ms(day)
        period = day
    else:
        q = _quarter(obj, quarter, quarter_opt)
        start, end, period = q.start_ms, q.end_ms, str(q)
    conn = _db(obj)
    if (
        canteen_id is not None
        and conn.execute("SELECT 1 FROM canteens WHERE id = ?", (canteen_id,)).fetchone() is None
    ):
        raise DomainError("unknown_canteen", canteen_id)
    data = {"period": period, **reports.shop_sales(conn, start, end, canteen_id, by=by, per_day=per_day)}
    if csv_file is not None:
        Path(csv_file).write_text(reports.shop_sales_csv(data), encoding="utf-8", newline="")
    title = "按商品 by item" if by == "item" else "按食堂 by canteen"
    lines = [f"小卖部商品销售 shop sales {title} {period}"]
    for r in data["items" if by == "item" else "canteens"]:
        day_text = f"{r['day']} " if per_day else ""
        what = f" {r['sku']} {r['name']}" if by == "item" else ""
        lines.append(
            f"  {day_text}{r['canteen_id']} {r['canteen_name']}{what}: {r['qty']} 件 "
            f"{format_fen(r['amount_fen'])} ({r['sales']} 笔)"
        )
    lines.append(f"合计 total: {data['totals']['qty']} 件 {format_fen(data['totals']['amount_fen'])}")
    emit(data, as_json, lines)


def _difference_text(d: dict[str, Any]) -> str:
    server = d["server"]
    amounts = f"{server['count']} 笔 {format_fen(server['amount_fen'])}"
    what = d["what"]
    if what.startswith(("held:", "rejected:", "reversal_rejected:")):
        kind, reason = what.split(":", 1)
        label = {"held": "待审核", "rejected": "已拒绝", "reversal_rejected": "冲正已拒绝"}[kind]
        return f"{label} {reason} {amounts}"
    mine = d["terminal"]
    return f"{what}: 终端 {mine['count']} 笔 {format_fen(mine['amount_fen'])} / 服务器 {amounts}"


@click.command("day-closes")
@click.option("--date", "day", default=None, help="Only closes of this business day (YYYY-MM-DD).")
@click.option("--terminal", "terminal_id", default=None, help="Only this terminal's closes.")
@JSON_OPTION
@click.pass_obj
def day_closes_report(obj: Any, day: str | None, terminal_id: str | None, as_json: bool) -> None:
    """Terminals' day closes (Z-reports) compared with what the server applied."""
    if day is not None:
        day_bounds_ms(day)  # refuses what is not a date
    data = day_closes.report(_db(obj), day, terminal_id)
    lines = [f"日结核对 day closes {day or ''}".rstrip()]
    for c in data["closes"]:
        status = f"{STATUS_ZH[c['status']]} {c['status']}"
        if c["code"]:
            status += f"（{c['code']}）"
        if c["missing"]:
            status += f"：{c['missing']} 笔交易尚未到达服务器"
        if c.get("missing_reversals"):
            status += f"：{c['missing_reversals']} 笔冲正尚未到达或尚未处理"
        lines.append(
            f"  {c['terminal_id']} Z{c['number']:04d} {c['business_day']} 食堂 {c['canteen_id']}: "
            f"消费 {c['sales']['count']} 笔 {format_fen(c['sales']['amount_fen'])} "
            f"冲正 {c['reversals']['count']} 笔 净额 {format_fen(c['net_fen'])} — {status}"
        )
        lines += [f"      {_difference_text(d)}" for d in c["differences"]]
    counts = data["counts"]
    lines.append(
        f"合计 total: 一致 {counts['matched']}，等待 {counts['waiting']}，不一致 {counts['mismatch']}"
    )
    emit(data, as_json, lines)
