"""The city's result: gathered from the counters' answers and the server's API, and shown
to people in Chinese with English.

:func:`collect` returns one JSON-ready object: ``city`` (sizes), ``days`` (per day: meals by
period, shop sales, declines, offline sales, the outage, time taken), ``methods`` (sales and
amount per payment method), ``declines`` (per reason), ``matrix`` (diners' unit × host
canteen, sales and amount, from ``/api/v1/reports/dining-matrix``), ``settlement`` and
``clearing`` (totals of the closes), ``overdrafts``, the audit figures (``approved``,
``applied``, ``pending``, ``duplicates_ignored``, ``mismatches``), ``ledger_sum_fen`` and
``violations``. :func:`render` prints it, the matrix included.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date
from typing import Any

from server.books.periods import Quarter
from shared.clock import china_datetime
from shared.errors import message
from shared.money import format_fen
from simulator.city.day import minute_ms
from simulator.city.state import CityState

METHOD_ZH = {"card": "刷卡 card", "qr": "扫码 QR", "face": "刷脸 face"}
MATRIX_ROWS = 16


def collect(
    city: CityState, days: list[date], per_day: list[dict[str, Any]], clearing: dict[str, Any]
) -> dict[str, Any]:
    admin = city.harness.admin
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in city.outcomes:
        by_day[china_datetime(o["at_ms"]).date().isoformat()].append(o)
    day_rows = []
    for d in per_day:
        out = by_day[d["date"]]
        ok = [o for o in out if o["approved"]]
        day_rows.append(
            {
                **d,
                "visits": len(out),
                "meals": dict(Counter(o["period"] for o in ok if o["kind"] == "meal")),
                "shop": sum(1 for o in ok if o["kind"] == "shop"),
                "declined": sum(1 for o in out if not o["approved"]),
                "offline": sum(1 for o in ok if o["offline"]),
                "amount_fen": sum(o["amount_fen"] for o in ok),
            }
        )
    methods: dict[str, dict[str, int]] = {}
    for o in city.outcomes:
        if o["approved"]:
            m = methods.setdefault(o["method"], {"count": 0, "amount_fen": 0})
            m["count"] += 1
            m["amount_fen"] += o["amount_fen"]
    quarters = sorted({Quarter.of_ms(minute_ms(d, 12 * 60)) for d in days})
    names = {v: k for k, v in city.canteen_ids.items()}
    unit_names = {v: k for k, v in city.unit_ids.items()}
    cells: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    cross = [0, 0]
    for q in quarters:
        m = admin.get(f"/api/v1/reports/dining-matrix?quarter={q}")
        for c in m["cells"]:
            cell = cells[
                (
                    unit_names.get(c["diner_unit_id"], c["diner_unit_id"]),
                    names.get(c["canteen_id"], c["canteen_id"]),
                )
            ]
            cell[0] += c["count"]
            cell[1] += c["amount_fen"]
        cross[0] += m["cross_unit"]["count"]
        cross[1] += m["cross_unit"]["amount_fen"]
    settlement = {}
    for q in quarters:
        doc = admin.get(f"/api/v1/settlements/{q}")
        settlement[str(q)] = {"statements": len(doc["statements"]), **doc["totals"]}
    check = admin.get("/api/v1/ledger/check")
    audit = city.harness.cluster.audit()
    plan = city.plan
    return {
        "city": {
            "units": len(plan.units),
            "canteens": len(plan.canteens),
            "diners": len(plan.diners),
            "terminals": sum(len(t) for t in city.tills.values()),
            "units_with_canteen": len({c.unit for c in plan.canteens}),
            "qr_users": sum(1 for d in plan.diners if d.pays == "qr"),
            "face_users": sum(1 for d in plan.diners if d.pays == "face"),
        },
        "days": day_rows,
        "methods": methods,
        "declines": dict(Counter(o["reason"] for o in city.outcomes if not o["approved"]).most_common()),
        "matrix": {
            "canteens": [c.name for c in plan.canteens],
            "cells": [
                {"unit": u, "canteen": c, "count": n, "amount_fen": a}
                for (u, c), (n, a) in sorted(cells.items())
            ],
            "cross_unit": {"count": cross[0], "amount_fen": cross[1]},
        },
        "settlement": settlement,
        "clearing": {
            "year": clearing["year"],
            "refund_to": clearing["refund_to"],
            "units": len(clearing["units"]),
            **clearing["totals"],
        },
        "overdrafts": len(admin.get("/api/v1/reports/overdrafts").get("holders", [])),
        "approved": audit.approved,
        "applied": audit.applied,
        "pending": audit.pending,
        "duplicates_ignored": audit.duplicates_ignored,
        "mismatches": audit.mismatches,
        "mismatch_details": audit.mismatch_details[:20],
        "ledger_sum_fen": check["ledger_sum_fen"],
        "violations": check["violations"],
    }


def consistent(result: dict[str, Any]) -> bool:
    return (
        result["approved"] == result["applied"]
        and result["pending"] == 0
        and result["mismatches"] == 0
        and result["ledger_sum_fen"] == 0
        and not result["violations"]
    )


def render(result: dict[str, Any]) -> str:
    c = result["city"]
    lines = [
        "食堂一卡通 城市仿真 · simulated city",
        f"  单位 units {c['units']}（有食堂 with a canteen {c['units_with_canteen']}）"
        f"· 食堂 canteens {c['canteens']}"
        f" · 终端 terminals {c['terminals']} · 就餐人员 diners {c['diners']:,}"
        f"（扫码 QR {c['qr_users']:,} · 刷脸 face {c['face_users']:,}）",
        "",
        "  日期 date      早餐 bkf  中餐 lunch  晚餐 dinner  超市 shop  拒绝 declined  "
        "离线 offline      金额 amount   用时 time",
    ]
    for d in result["days"]:
        m = d["meals"]
        lines.append(
            f"  {d['date']}  {m.get('breakfast', 0):>8,}  {m.get('lunch', 0):>10,}  {m.get('dinner', 0):>11,}"
            f"  {d['shop']:>9,}  {d['declined']:>13,}  {d['offline']:>12,}  {format_fen(d['amount_fen']):>14}"
            f"  {d['elapsed_s']:>7} s"
        )
        if d.get("outage"):
            o = d["outage"]
            lines.append(
                f"    断网 outage at {o['canteen']} 终端 {o['terminal']}: 回程中断 acks lost {o['oneway']}, "
                f"全断 cut {o['cut']}, 恢复 back {o['heal']} — 离线照常收款，恢复后补传，重复的由服务器忽略"
                f" (served offline; resent when back; copies ignored)"
            )
    lines.append("")
    lines.append(
        "  支付方式 payment methods: "
        + " · ".join(
            f"{METHOD_ZH.get(k, k)} {v['count']:,} 笔 {format_fen(v['amount_fen'])}"
            for k, v in sorted(result["methods"].items())
        )
    )
    lines.append(
        "  拒绝原因 declines: "
        + (" · ".join(f"{message(k, 'zh')} ({k}) ×{n}" for k, n in result["declines"].items()) or "-")
    )
    lines += _matrix(result["matrix"])
    for q, s in result["settlement"].items():
        lines.append(
            f"  季度结算 settlement {q}: {s['statements']} 份结算单 statements"
            f" · 消费 gross {format_fen(s['gross_fen'])}"
            f" · 调整 adjustments {format_fen(s['adjustments_fen'])}"
            f" · 质量扣减 withheld {format_fen(s['withheld_fen'])}"
            f" · 手续费 fee {format_fen(s['fee_fen'])}"
            f" · 支付经营者 paid to operators {format_fen(s['net_fen'])}"
        )
    cl = result["clearing"]
    to = "各单位 the units" if cl["refund_to"] == "unit" else "市财政 city finance"
    lines.append(
        f"  年末清零 year-end clearing {cl['year']}: 退回{to} {format_fen(cl['refund_fen'])} "
        f"({cl['holders']:,} cards, {cl['units']} units)"
    )
    lines.append(f"  透支 overdrafts: {result['overdrafts']}")
    lines.append(
        f"  审计 audit: 终端批准 approved {result['approved']:,} · 服务器入账 applied {result['applied']:,}"
        f" · 待上传 pending {result['pending']} · 重复已忽略 duplicates {result['duplicates_ignored']}"
        f" · 不一致 mismatches {result['mismatches']} · 账本合计 ledger sum {result['ledger_sum_fen']} fen"
    )
    t = result.get("timings", {})
    ok = consistent(result)
    verdict = "✔ 全部一致 all consistent" if ok else "✘ 不一致 INCONSISTENT"
    lines.append(
        f"  {verdict} · 准备 setup {t.get('setup_s')} s"
        f" · 结算 closing {t.get('closing_s')} s · 合计 total {t.get('total_s')} s"
    )
    return "\n".join(lines)


def _matrix(matrix: dict[str, Any]) -> list[str]:
    """Diners' unit (rows, busiest first) × host canteen (numbered columns), sales counted."""
    canteens = matrix["canteens"]
    index = {name: i for i, name in enumerate(canteens)}
    rows: dict[str, list[int]] = defaultdict(lambda: [0] * len(canteens))
    for cell in matrix["cells"]:
        if cell["canteen"] in index:
            rows[cell["unit"]][index[cell["canteen"]]] += cell["count"]
    order = sorted(rows, key=lambda u: -sum(rows[u]))
    shown, rest = order[:MATRIX_ROWS], order[MATRIX_ROWS:]
    total = sum(sum(r) for r in rows.values())
    cross = matrix["cross_unit"]["count"]
    label_rest = f"其他 {len(rest)} 个单位"
    width = max([_cells(u) for u in shown] + [_cells(label_rest), 8])
    out = [
        "",
        "  跨单位就餐矩阵 cross-unit dining matrix"
        "（行 rows: 就餐人单位 diners' unit，列 columns: 食堂 canteen，笔数 sales）"
        f"  跨单位 cross-unit {cross:,} / {total:,}" + (f" ({100 * cross / total:.1f}%)" if total else ""),
    ]
    out.append("    " + " " * width + "".join(f"{i + 1:>6}" for i in range(len(canteens))) + "    合计")

    def line(name: str, values: list[int]) -> str:
        return (
            "    "
            + name
            + " " * (width - _cells(name))
            + "".join(f"{v:>6}" if v else "     ·" for v in values)
            + f"{sum(values):>8}"
        )

    for u in shown:
        out.append(line(u, rows[u]))
    if rest:
        out.append(line(label_rest, [sum(rows[u][i] for u in rest) for i in range(len(canteens))]))
    out.append("    食堂 canteens: " + " · ".join(f"{i + 1} {n}" for i, n in enumerate(canteens)))
    out.append("")
    return out


def _cells(text: str) -> int:
    """Terminal columns ``text`` takes (a Chinese character takes two)."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)
