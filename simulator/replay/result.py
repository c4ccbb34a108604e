"""The result of a replay, read back from the server's API after the story ends.

Keys (amounts in fen; canteens and units by their scenario names)::

    cards        {card: {"subsidy_fen", "self_fen", "blocked", "status"}}
                 blocked: the card cannot pay (lost/retired, or its holder is blocked)
    statements   {quarter: {canteen: {"gross_fen", "withheld_fen", "fee_fen", "net_fen",
                  "adjustments_fen", "settlement_fen", "pay_pct", "quality_score", "sales_count"}}}
    clearing     {year: {unit: {"refund_fen", "cleared_fen", "late_sales_fen", "refund_to"}}}
    allocations  {quarter: {unit: {"total_fen", "per_person_fen", "headcount", "late"}}}
    sales        [{"index", "at", "card", "canteen", "amount_fen", "subsidy_fen", "self_fen",
                   "overdraft_fen", "offline", "items", "reversed"}]   every approved sale, as the server
                 applied it; items as the terminal sold them: [[sku, qty, unit price, reference]]
    reversals    [{"index", "at", "canteen", "card", "sale_index", "amount_fen", "subsidy_fen",
                   "self_fen", "offline", "applied"}]   every reversal (冲正) a terminal made,
                 with what the server gave back to each purse
    reversal_declines [{"index", "at", "canteen", "card", "reason"}]   reversals refused
    declines     [{"index", "at", "card", "canteen", "reason"}]
    cashier      [{"index", "at", "step", "reason"}]   a checkout's steps the terminal refused
    refusals     [{"index", "at", "event", "code", "detail"}]   requests the server refused
    ledger_sum_fen, violations                   GET /api/v1/ledger/check
    audit        {"approved", "applied", "pending", "duplicates_ignored", "mismatches", ...}
"""

from __future__ import annotations

from typing import Any, Protocol

from shared.errors import message
from shared.money import format_fen
from simulator.harness.driver import Api, Harness
from simulator.replay.scenario import Scenario

STATEMENT_KEYS = (
    "gross_fen",
    "withheld_fen",
    "fee_fen",
    "net_fen",
    "adjustments_fen",
    "settlement_fen",
    "pay_pct",
    "quality_score",
    "sales_count",
)


class Story(Protocol):
    """What :func:`collect` reads of a story once it has been played (the replay's story
    object is one); a protocol, so this module need not import the replay that uses it."""

    s: Scenario  # the scenario played
    h: Harness  # its cluster's audit
    admin: Api  # reads the result back
    unit_ids: dict[str, str]  # unit name -> id
    years_closed: set[int]
    approved: dict[str, dict[str, Any]]  # sale uuid -> what the story knows of it
    reversals: list[dict[str, Any]]  # reversals the terminals made
    reversal_declines: list[dict[str, Any]]
    declines: list[dict[str, Any]]
    cashier: list[dict[str, Any]]
    refusals: list[dict[str, Any]]


def collect(story: Story) -> dict[str, Any]:
    admin = story.admin
    unit_names = {v: k for k, v in story.unit_ids.items()}
    cards: dict[str, dict[str, Any]] = {}
    holder_ids: dict[str, str] = {}
    for card in story.s.cards:
        c = admin.get(f"/api/v1/cards/{card}")
        h = admin.get(f"/api/v1/holders/{c['holder_id']}")
        holder_ids[card] = c["holder_id"]
        cards[card] = {
            "subsidy_fen": h["subsidy_fen"],
            "self_fen": h["self_fen"],
            "blocked": bool(h["blocked"]) or c["status"] != "active",
            "status": c["status"],
        }

    statements: dict[str, dict[str, Any]] = {}
    for period in admin.get("/api/v1/settlements"):
        doc = admin.get(f"/api/v1/settlements/{period['quarter']}")
        statements[doc["quarter"]] = {
            st["canteen_name"]: {k: st[k] for k in STATEMENT_KEYS} for st in doc["statements"]
        }

    clearing: dict[str, dict[str, Any]] = {}
    for year in sorted(story.years_closed):
        report = admin.get(f"/api/v1/clearings/{year}")
        clearing[str(year)] = {
            unit_names.get(u["unit_id"], u["unit_id"]): {
                "refund_fen": u["refund_fen"],
                "cleared_fen": u["cleared_fen"],
                "late_sales_fen": u["late_sales_fen"],
                "refund_to": report["refund_to"],
            }
            for u in report["units"]
        }

    allocations: dict[str, dict[str, Any]] = {}
    for a in admin.get("/api/v1/allocations"):
        allocations.setdefault(a["quarter"], {})[unit_names.get(a["unit_id"], a["unit_id"])] = {
            "total_fen": a["total_fen"],
            "per_person_fen": a["per_person_fen"],
            "headcount": a["headcount"],
            "late": a["late"],
        }

    server_sales: dict[str, dict[str, Any]] = {}
    for holder_id in sorted(set(holder_ids.values())):
        for s in admin.get(f"/api/v1/holders/{holder_id}/sales?limit=500"):
            server_sales[s["uuid"]] = s
    sales = []
    for sale_uuid, known in story.approved.items():
        s = server_sales.get(sale_uuid)
        sales.append(
            {
                "index": known["index"],
                "at": known["at"],
                "card": known["card"],
                "canteen": known["canteen"],
                "amount_fen": s["amount_fen"] if s else None,
                "subsidy_fen": s["subsidy_fen"] if s else None,
                "self_fen": s["self_fen"] if s else None,
                "overdraft_fen": s["overdraft_fen"] if s else None,
                "offline": known["offline"],
                "items": known.get("items", []),
                "reversed": bool(s and s["reversed"]),
            }
        )
    sales.sort(key=lambda x: x["index"])
    reversals = []
    for r in story.reversals:
        s = server_sales.get(r["sale_uuid"])
        back = s["reversal"] if s else None
        reversals.append(
            {
                "index": r["index"],
                "at": r["at"],
                "canteen": r["canteen"],
                "card": r["card"],
                "sale_index": story.approved.get(r["sale_uuid"], {}).get("index"),
                "amount_fen": back["amount_fen"] if back else None,
                "subsidy_fen": back["subsidy_fen"] if back else None,
                "self_fen": back["self_fen"] if back else None,
                "offline": r["offline"],
                "applied": back is not None,
            }
        )

    check = admin.get("/api/v1/ledger/check")
    audit = story.h.cluster.audit().to_json()
    return {
        "scenario": story.s.name,
        "cards": cards,
        "statements": statements,
        "clearing": clearing,
        "allocations": allocations,
        "sales": sales,
        "reversals": reversals,
        "reversal_declines": story.reversal_declines,
        "declines": story.declines,
        "cashier": story.cashier,
        "refusals": story.refusals,
        "ledger_sum_fen": check["ledger_sum_fen"],
        "violations": check["violations"],
        "audit": {
            k: audit[k]
            for k in (
                "approved",
                "applied",
                "reversals_approved",
                "reversals_applied",
                "pending",
                "duplicates_ignored",
                "mismatches",
                "mismatch_details",
            )
        },
    }


def render(result: dict[str, Any], failures: list[str] | None = None) -> str:
    """The result for people: zh-CN labels with English, amounts as ``¥12.50``."""
    lines = [f"食堂一卡通 场景回放 · scenario replay: {result['scenario']}", "", "  卡片 cards:"]
    for card, c in result["cards"].items():
        state = {"lost": "已挂失 lost", "retired": "已停用 retired"}.get(c["status"], "")
        if c["blocked"] and not state:
            state = "已冻结 blocked"
        lines.append(
            f"    {card:<10} 补贴 subsidy {format_fen(c['subsidy_fen']):>10}   "
            f"自费 self {format_fen(c['self_fen']):>10}   {state}".rstrip()
        )
    for quarter, canteens in result["statements"].items():
        lines.append(f"  结算单 statements {quarter}:")
        for name, st in canteens.items():
            lines.append(
                f"    {name}  消费 gross {format_fen(st['gross_fen'])}"
                f"  调整 adjustments {format_fen(st['adjustments_fen'])}"
                f"  质量扣减 withheld {format_fen(st['withheld_fen'])} (pay {st['pay_pct']}%)"
                f"  手续费 fee {format_fen(st['fee_fen'])}  应付 net {format_fen(st['net_fen'])}"
            )
    for year, units in result["clearing"].items():
        lines.append(f"  年末清零 year-end clearing {year}:")
        for name, u in units.items():
            to = "单位 unit" if u["refund_to"] == "unit" else "市财政 city finance"
            lines.append(
                f"    {name}  清零 cleared {format_fen(u['cleared_fen'])}  迟到交易 late sales "
                f"{format_fen(u['late_sales_fen'])}  退回{to} {format_fen(u['refund_fen'])}"
            )
    if result["reversals"]:
        lines.append("  冲正 reversals:")
        for r in result["reversals"]:
            back = (
                f"退回 back {format_fen(r['amount_fen'])} (补贴 subsidy {format_fen(r['subsidy_fen'])}"
                f" / 自费 self {format_fen(r['self_fen'])})"
                if r["applied"]
                else "服务器未入账 not applied"
            )
            lines.append(
                f"    [{r['index']}] {r['at']} @ {r['canteen']}: 冲正 sale [{r['sale_index']}] "
                f"{r['card'] or ''} {back}{' 离线 offline' if r['offline'] else ''}"
            )
    for d in result["reversal_declines"]:
        lines.append(
            f"  冲正被拒 reversal refused [{d['index']}] {d['at']} @ {d['canteen']}: "
            f"{message(d['reason'], 'zh')} ({d['reason']})"
        )
    if result["declines"]:
        lines.append("  拒绝 declines:")
        for d in result["declines"]:
            lines.append(
                f"    [{d['index']}] {d['at']} {d['card']} @ {d['canteen']}: "
                f"{message(d['reason'], 'zh')} ({d['reason']})"
            )
    if result.get("cashier"):
        lines.append("  收银员操作被拒 cashier steps refused:")
        for c in result["cashier"]:
            lines.append(
                f"    [{c['index']}] {c['at']} {c['step']}: {message(c['reason'], 'zh')} ({c['reason']})"
            )
    if result["refusals"]:
        lines.append("  服务器拒绝的请求 refused requests:")
        for r in result["refusals"]:
            where = f"[{r['index']}] {r['at']}" if r["index"] is not None else "setup"
            lines.append(f"    {where} {r['event']}: {message(r['code'], 'zh')} ({r['code']}) {r['detail']}")
    a = result["audit"]
    lines += [
        "",
        f"  终端批准 approved {a['approved']} · 服务器入账 applied {a['applied']}"
        f" · 冲正 reversals {a['reversals_approved']}/{a['reversals_applied']}"
        f" · 待上传 pending {a['pending']}"
        f" · 重复已忽略 duplicates {a['duplicates_ignored']} · 不一致 mismatches {a['mismatches']}",
        f"  账本合计 ledger sum {result['ledger_sum_fen']} fen · 违规 violations {len(result['violations'])}",
    ]
    for f in failures or []:
        lines.append(f"  ✘ {f}")
    ok = not failures
    lines.append(
        f"  {'✔ 全部一致 all consistent' if ok else '✘ 不一致 FAILED'} · {result.get('elapsed_s', '?')} s"
    )
    return "\n".join(lines)
