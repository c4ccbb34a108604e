"""``canteen-server`` money commands: allocate, topup, settle, close-year, report …, and the
payee and quality settings that settlement reads.

Registered on the main group by :mod:`server.cli` (``COMMANDS``). Each reporting command
takes ``--json``; amounts are shown as ``¥12.50`` and given in fen in JSON. Domain errors
become one line on stderr and exit code 2 (the main group does that).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import click

from server.books.periods import Quarter, day_bounds_ms, day_of_ms
from server.cli.output import AMOUNT_SETTINGS, JSON_OPTION, emit, yuan
from server.closing import clearing, quality, reports, settlement
from server.closing.statement_files import payout_csv, statement_csv
from server.infra.db import write_txn
from server.infra.run_once import run_once
from server.registry import funds, operators
from server.sales import quarantine
from shared.errors import DomainError, message
from shared.money import format_fen


def _now(obj: Any) -> int:
    return int(obj.app.extensions["canteen_clock"].now_ms())


def _db(obj: Any) -> sqlite3.Connection:
    return obj.db()


@click.command()
@click.argument("unit_id")
@click.argument("quarter")
@click.option("--per-person", default=None, help="Yuan per person (default: the unit's quarterly standard).")
@JSON_OPTION
@click.pass_obj
def allocate(obj: Any, unit_id: str, quarter: str, per_person: str | None, as_json: bool) -> None:
    """Allocate QUARTER's subsidy (e.g. 2026Q1) to every active holder of UNIT_ID."""
    conn = _db(obj)
    per_person_fen = yuan(per_person) if per_person is not None else None
    with write_txn(conn):
        r = funds.allocate(conn, unit_id, quarter, per_person_fen, _now(obj))
    emit(
        r,
        as_json,
        [
            f"拨付 allocation {r['unit_id']} {r['quarter']}: {r['holders']} 人 × "
            f"{format_fen(r['per_person_fen'])} = {format_fen(r['total_fen'])}"
            + ("  逾期拨付 (late)" if r["late"] else ""),
        ],
    )


@click.command(context_settings=AMOUNT_SETTINGS)
@click.argument("card_id")
@click.argument("amount")
@click.option("--ref", default=None, help="The bank's transaction id (a repeat is refused).")
@JSON_OPTION
@click.pass_obj
def topup(obj: Any, card_id: str, amount: str, ref: str | None, as_json: bool) -> None:
    """Self top-up of AMOUNT yuan (e.g. 50 or 12.50) onto CARD_ID's self purse."""
    conn = _db(obj)
    amount_fen = yuan(amount)
    with write_txn(conn):
        balance = funds.topup(conn, card_id, amount_fen, _now(obj), ref=ref)
    emit(
        {"card_id": card_id, "amount_fen": amount_fen, "self_fen": balance},
        as_json,
        [f"充值 top-up {card_id}: {format_fen(amount_fen)}; 自费余额 self purse {format_fen(balance)}"],
    )


@click.command()
@click.argument("quarter")
@click.option(
    "--force", is_flag=True, help="Close although some terminals have not reported past the quarter end."
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the statements CSV here.",
)
@click.option(
    "--payout",
    "payout_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the payout CSV here.",
)
@JSON_OPTION
@click.pass_obj
def settle(
    obj: Any, quarter: str, force: bool, csv_path: Path | None, payout_path: Path | None, as_json: bool
) -> None:
    """Settle QUARTER (e.g. 2026Q1) for every canteen; settling again shows the stored result."""
    conn = _db(obj)
    with run_once(obj.app.config["DATABASE"], "settlement"), write_txn(conn):
        doc, created = settlement.settle_quarter(conn, quarter, _now(obj), force=force)
    if csv_path:
        csv_path.write_text(statement_csv(doc), encoding="utf-8")
    if payout_path:
        payout_path.write_text(payout_csv(doc), encoding="utf-8")
    emit(doc, as_json, _settlement_lines(doc, created))


def _settlement_lines(doc: dict[str, Any], created: bool = True) -> list[str]:
    lines = [f"结算 settlement {doc['quarter']}" + ("" if created else " (已结账 already closed)")]
    if doc["incomplete_terminals"]:
        lines.append(
            "未报齐终端 terminals behind: " + ", ".join(t["terminal_id"] for t in doc["incomplete_terminals"])
        )
    for s in doc["statements"]:
        lines.append(
            f"  {s['canteen_id']} {s['canteen_name']}: 消费 {format_fen(s['gross_fen'])} "
            f"调整 {format_fen(s['adjustments_fen'])} 扣款 {format_fen(s['withheld_fen'])} "
            f"手续费 {format_fen(s['fee_fen'])} 应付 {format_fen(s['net_fen'])}"
        )
    t = doc["totals"]
    lines.append(f"合计 total: 应付 net {format_fen(t['net_fen'])}, 手续费 fee {format_fen(t['fee_fen'])}")
    return lines


@click.command("close-year")
@click.argument("year")
@click.option(
    "--force",
    is_flag=True,
    help="Clear although some terminals have not reported past the year end, or there is nothing to clear.",
)
@click.option(
    "--refund-to",
    type=click.Choice(list(clearing.REFUND_TARGETS)),
    default=None,
    help="Where unspent subsidy goes (default: the YEAR_END_REFUND_TO setting).",
)
@JSON_OPTION
@click.pass_obj
def close_year(obj: Any, year: str, force: bool, refund_to: str | None, as_json: bool) -> None:
    """Year-end clearing of YEAR: refund every card's remaining subsidy; self purses stay.

    A year with nothing to clear is refused (a typo in YEAR would otherwise close it for
    good); --force records it anyway."""
    conn = _db(obj)
    target = refund_to or obj.app.config.get("YEAR_END_REFUND_TO", "unit")
    with run_once(obj.app.config["DATABASE"], "clearing"), write_txn(conn):
        report, created = clearing.close_year(conn, year, _now(obj), refund_to=target, force=force)
        if created and not force and not report["units"]:  # rolled back with the transaction
            raise DomainError(
                "nothing_to_clear",
                f"no subsidy left on any card for {report['year']}",
                zh=f"{report['year']}年度没有任何卡上有剩余补贴",
            )
    emit(report, as_json, _clearing_lines(report, created))


def _clearing_lines(report: dict[str, Any], created: bool = True) -> list[str]:
    lines = [
        f"年末清零 clearing {report['year']} → {report['refund_to']}"
        + ("" if created else " (已清零 already cleared)")
    ]
    for u in report["units"]:
        lines.append(
            f"  {u['unit_id']} {u['unit_name']}: {u['holders']} 人 清零 {format_fen(u['cleared_fen'])} "
            f"迟到消费 {format_fen(u['late_sales_fen'])} 退回 {format_fen(u['refund_fen'])}"
        )
    lines.append(f"合计退回 total refund {format_fen(report['totals']['refund_fen'])}")
    return lines


@click.command("operator-set")
@click.argument("name")
@click.option("--company-name", default=None)
@click.option("--bank-name", default=None)
@click.option("--bank-account", default=None)
@click.option("--contact", default=None)
@click.option("--phone", default=None)
@JSON_OPTION
@click.pass_obj
def operator_set(obj: Any, name: str, as_json: bool, **fields: str | None) -> None:
    """Set the payee details of operator NAME (as in canteens.operator) for the payout file."""
    conn = _db(obj)
    with write_txn(conn):
        p = operators.set_operator(conn, name, **{k: v for k, v in fields.items() if v is not None})
    emit(p, as_json, [f"收款人 payee {p['name']}: {p['company_name']} {p['bank_name']} {p['bank_account']}"])


@click.command("quality-score")
@click.argument("canteen_id")
@click.argument("quarter")
@click.argument("score", type=int)
@JSON_OPTION
@click.pass_obj
def quality_score(obj: Any, canteen_id: str, quarter: str, score: int, as_json: bool) -> None:
    """Enter the owning unit's quality SCORE (0–100) of CANTEEN_ID for QUARTER."""
    conn = _db(obj)
    with write_txn(conn):
        r = quality.set_score(conn, canteen_id, quarter, score, _now(obj), "cli")
    emit(r, as_json, [f"质量评分 score {canteen_id} {r['quarter']}: {score} → 支付 pay {r['pay_pct']}%"])


@click.command("quality-bands")
@click.argument("canteen_id")
@click.argument("bands")
@JSON_OPTION
@click.pass_obj
def quality_bands(obj: Any, canteen_id: str, bands: str, as_json: bool) -> None:
    """Set CANTEEN_ID's quality bands, e.g. '[[90,100],[80,98],[0,95]]'."""
    try:
        raw = json.loads(bands)
    except json.JSONDecodeError as exc:
        raise DomainError("invalid_input", f"bands must be JSON: {exc}") from exc
    conn = _db(obj)
    with write_txn(conn):
        result = quality.set_bands(conn, canteen_id, raw)
    emit(
        {"canteen_id": canteen_id, "bands": [list(b) for b in result]},
        as_json,
        [f"质量分档 bands {canteen_id}: " + ", ".join(f"≥{lo}:{pct}%" for lo, pct in result)],
    )


# --- reports -----------------------------------------------------------------------------


@click.group()
def report() -> None:
    """Reports: daily, quarterly, matrix, shop, allocations, overdrafts, blocked, quality, clearing,
    settlement.

    A quarter is given as an argument, like settle and allocate: report quarterly 2026Q1."""


def _totals_lines(title: str, data: dict[str, Any]) -> list[str]:
    lines = [title]
    for c in data["canteens"]:
        lines.append(
            f"  食堂 {c['canteen_id']} {c['canteen_name']}: {c['count']} 笔 {format_fen(c['amount_fen'])} "
            f"(补贴 {format_fen(c['subsidy_fen'])}, 自费 {format_fen(c['self_fen'])}, "
            f"数字人民币 {format_fen(c['ecny_fen'])})"
        )
    for u in data["units"]:
        lines.append(f"  单位 {u['unit_id']} {u['unit_name']}: {u['count']} 笔 {format_fen(u['amount_fen'])}")
    lines.append(f"合计 total: {data['totals']['count']} 笔 {format_fen(data['totals']['amount_fen'])}")
    return lines


@report.command()
@click.option("--date", "day", default=None, help="Beijing date YYYY-MM-DD (default: today).")
@JSON_OPTION
@click.pass_obj
def daily(obj: Any, day: str | None, as_json: bool) -> None:
    """One day's totals per canteen and per diners' unit."""
    day = day or day_of_ms(_now(obj))
    start, end = day_bounds_ms(day)
    data = {"date": day, **reports.sales_totals(_db(obj), start, end)}
    emit(data, as_json, _totals_lines(f"日报 daily {day}", data))


def _quarter(obj: Any, quarter: str | None, quarter_opt: str | None = None) -> Quarter:
    given = quarter or quarter_opt
    return Quarter.parse(given) if given else Quarter.of_ms(_now(obj))


def quarter_argument(f: Any) -> Any:
    """QUARTER as an argument (like settle and allocate), default the current quarter; the
    older ``--quarter`` still works, hidden."""
    f = click.option("--quarter", "quarter_opt", default=None, hidden=True)(f)
    return click.argument("quarter", required=False)(f)


@report.command()
@quarter_argument
@JSON_OPTION
@click.pass_obj
def quarterly(obj: Any, quarter: str | None, quarter_opt: str | None, as_json: bool) -> None:
    """QUARTER's totals (e.g. 2026Q1; default: this quarter) per canteen and per diners' unit."""
    q = _quarter(obj, quarter, quarter_opt)
    data = {"quarter": str(q), **reports.sales_totals(_db(obj), q.start_ms, q.end_ms)}
    emit(data, as_json, _totals_lines(f"季报 quarterly {q}", data))


@report.command()
@quarter_argument
@JSON_OPTION
@click.pass_obj
def matrix(obj: Any, quarter: str | None, quarter_opt: str | None, as_json: bool) -> None:
    """Cross-unit dining in QUARTER: diners' unit × host canteen, count and amount."""
    q = _quarter(obj, quarter, quarter_opt)
    data = {"quarter": str(q), **reports.dining_matrix(_db(obj), q.start_ms, q.end_ms)}
    lines = [f"跨单位就餐 dining matrix {q}"] + [
        f"  {c['diner_unit_id']} → {c['canteen_id']}{' *' if c['cross_unit'] else ''}: "
        f"{c['count']} 笔 {format_fen(c['amount_fen'])}"
        for c in data["cells"]
    ]
    cross = data["cross_unit"]
    lines.append(f"跨单位 cross-unit (*): {cross['count']} 笔 {format_fen(cross['amount_fen'])}")
    emit(data, as_json, lines)


ALLOCATION_STATUS_ZH = {
    "on_time": "按时拨付",
    "late": "逾期拨付",
    "missing": "逾期未拨付",
    "pending": "未拨付（未到期）",
}


@report.command("allocations")
@quarter_argument
@JSON_OPTION
@click.pass_obj
def allocations_report(obj: Any, quarter: str | None, quarter_opt: str | None, as_json: bool) -> None:
    """Allocation status per unit in QUARTER: 按时拨付, 逾期拨付, 逾期未拨付, 未拨付（未到期）."""
    data = reports.allocation_status(_db(obj), str(_quarter(obj, quarter, quarter_opt)), _now(obj))
    lines = [f"拨付情况 allocations {data['quarter']}"] + [
        f"  {u['unit_id']} {u['unit_name']}: {ALLOCATION_STATUS_ZH[u['status']]} {format_fen(u['total_fen'])}"
        for u in data["units"]
    ]
    emit(data, as_json, lines)


@report.command()
@JSON_OPTION
@click.pass_obj
def overdrafts(obj: Any, as_json: bool) -> None:
    """Holders with an uncovered offline overdraft."""
    data = reports.overdrafts(_db(obj))
    lines = ["透支 overdrafts"] + [
        f"  {h['holder_id']} {h['name']} ({h['unit_id']}): {format_fen(h['self_fen'])}"
        for h in data["holders"]
    ]
    emit(data, as_json, lines)


@report.command()
@JSON_OPTION
@click.pass_obj
def blocked(obj: Any, as_json: bool) -> None:
    """Cards the terminals refuse, and why."""
    data = reports.blocked_cards(_db(obj))
    emit(
        data,
        as_json,
        ["停用卡 blocked cards"]
        + [f"  {c['card_id']} {c['name']}: {', '.join(c['reasons'])}" for c in data["cards"]],
    )


def _or_dash(value: object) -> str:
    return "—" if value is None else str(value)


@report.command("quality")
@quarter_argument
@JSON_OPTION
@click.pass_obj
def quality_cmd(obj: Any, quarter: str | None, quarter_opt: str | None, as_json: bool) -> None:
    """Quality scores, pay % and diners' average ratings per canteen in QUARTER."""
    data = quality.quality_report(_db(obj), str(_quarter(obj, quarter, quarter_opt)))
    lines = [f"质量 quality {data['quarter']}"] + [
        f"  {c['canteen_id']}: 评分 {'未评分 —' if c['score'] is None else c['score']} "
        f"支付 {c['pay_pct']}% 评价 {c['ratings']} 条 "
        f"服务 {_or_dash(c['service_avg'])} 菜品 {_or_dash(c['food_avg'])}"
        for c in data["canteens"]
    ]
    emit(data, as_json, lines)


@report.command("clearing")
@click.argument("year", type=int)
@JSON_OPTION
@click.pass_obj
def clearing_cmd(obj: Any, year: int, as_json: bool) -> None:
    """A year's clearing per unit, with late-sale adjustments."""
    data = clearing.clearing_report(_db(obj), year)
    if data is None:
        raise DomainError("not_found", f"{year} is not cleared")
    emit(data, as_json, _clearing_lines(data))


@report.command("settlement")
@click.argument("quarter")
@JSON_OPTION
@click.pass_obj
def settlement_cmd(obj: Any, quarter: str, as_json: bool) -> None:
    """The stored statements of a settled QUARTER (e.g. 2026Q1), as settle printed them."""
    q = str(Quarter.parse(quarter))
    doc = settlement.settlement_document(_db(obj), q)
    if doc is None:
        raise DomainError("not_found", f"{q} is not settled yet", zh=f"{q} 尚未结算（先运行 settle {q}）")
    emit(doc, as_json, _settlement_lines(doc))


_STATE_ZH = {"pending": "待处理", "accepted": "已接受", "rejected": "已拒绝"}


def _held_line(s: dict[str, Any]) -> str:
    what = s["meal_period"] or ("、".join(f"{i['sku']}×{i['qty']}" for i in s["items"]) or "自定金额")
    line = (
        f"  {s['terminal_id']}/{s['seq']} {s['canteen_id']} {s['card_id'] or s['method']} {what} "
        f"{format_fen(s['amount_fen'])} {_STATE_ZH[s['state']]} — {message(s['reason'])} [{s['reason']}]"
    )
    return line + (f"；处理意见 note: {s['decision_note']}" if s["decision_note"] else "")


@report.command("quarantine")
@click.option("--state", type=click.Choice(quarantine.STATES), default=None, help="Only this state.")
@JSON_OPTION
@click.pass_obj
def quarantine_report(obj: Any, state: str | None, as_json: bool) -> None:
    """Sales held back for review (待审核消费), and terminals quarantined repeatedly today."""
    data = quarantine.listing(_db(obj), _now(obj), state=state)
    n = data["counts"]
    lines = [
        f"待审核消费 held sales: 待处理 pending {n['pending']} 已接受 accepted {n['accepted']} "
        f"已拒绝 rejected {n['rejected']}"
    ]
    lines += [_held_line(s) for s in data["sales"]]
    lines += [
        f"可疑终端 suspect terminal {t['terminal_id']} ({t['canteen_id']}): "
        f"今日 {t['quarantined_today']} 笔待审核"
        for t in data["suspect_terminals"]
    ]
    emit(data, as_json, lines)


@click.group("quarantine")
def quarantine_group() -> None:
    """Decide sales held back for review: accept (applied now, once) or reject."""


@quarantine_group.command("accept")
@click.argument("terminal_id")
@click.argument("seq", type=int)
@click.option("--note", default=None, help="Why it is accepted (kept with the decision).")
@JSON_OPTION
@click.pass_obj
def quarantine_accept(obj: Any, terminal_id: str, seq: int, note: str | None, as_json: bool) -> None:
    """Accept a held sale: it is applied now, dated now."""
    conn = _db(obj)
    with write_txn(conn):
        done = quarantine.accept(conn, terminal_id, seq, _now(obj), "admin-cli", note)
    r = done["result"]
    emit(
        done, as_json, f"已接受 accepted {terminal_id}/{seq}: {r['status']} {format_fen(done['amount_fen'])}"
    )


@quarantine_group.command("reject")
@click.argument("terminal_id")
@click.argument("seq", type=int)
@click.option("--reason", required=True, help="Why (shown to the canteen's operator).")
@JSON_OPTION
@click.pass_obj
def quarantine_reject(obj: Any, terminal_id: str, seq: int, reason: str, as_json: bool) -> None:
    """Reject a held sale for good; it is never applied."""
    conn = _db(obj)
    with write_txn(conn):
        done = quarantine.reject(conn, terminal_id, seq, _now(obj), "admin-cli", reason)
    emit(done, as_json, f"已拒绝 rejected {terminal_id}/{seq}: {reason}")


COMMANDS = [
    allocate,
    topup,
    settle,
    close_year,
    operator_set,
    quality_score,
    quality_bands,
    report,
    quarantine_group,
]
