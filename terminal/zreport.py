"""The day-close report (日结报表, a "Z-report"): what one terminal sold since its previous
close. Pure: journal rows in, a :class:`ZReport` out, and its Chinese text for the file
and the customer display.

A close covers the sales with ``seq_from ≤ seq ≤ seq_to``: from the one after the previous
close's ``seq_to`` to the last sale journaled when the operator closed. Sequence numbers
are gap-free per terminal, so the server can tell whether it has received every sale of
a close and compare its own figures with these (:mod:`server.closing.day_closes`).

* ``sales`` — every sale this terminal approved in the range (the diner was told 支付成功),
  whatever the server later made of it; by meal period (``shop`` for the shop), by payment
  method, and for the shop by item (quantity and amount at the prices charged);
* ``reversals`` — the reversals (冲正) this terminal made in the close's *reversal* range
  ``rev_seq_from ≤ reversal seq ≤ rev_seq_to`` (see below), whatever the server later made
  of them: count and amount, and by payment method (the sale's); ``net`` = sales −
  reversals. Those the server had refused at the close are also counted apart
  (``reversals_rejected_by_server``, still in ``reversals``: the till gave the money back);
* what the server had already answered at the close: sales it ``held`` for review
  (quarantined) or ``rejected`` — counted in ``sales`` all the same (the till took them);
* ``unsent`` — sales of the range not yet acknowledged by the server at the close;
* ``declines`` — refused taps since the previous close;
* ``reversals_unsent`` — reversals of the range not yet finally answered by the server.

**Which reversals a close covers.** A reversal is a record of its own with its own sequence
number (gap-free per terminal, :mod:`terminal.reversals`), independent of the sales': a
reversal belongs to the close in whose range its *own* seq lies — from the one after the
previous close's ``rev_seq_to`` to the last reversal announced (冲正成功 shown) when the
operator closed; a reversal still being made (journaled, not yet announced: a digital RMB
refund under way, which may yet be dropped) ends the range before it and falls to the next
close. So a reversal made after a close counts in the next one even when its sale was in an
earlier close, and no reversal is counted twice or skipped. The range is kept in the report
like the sales' (``rev_seq_from``/``rev_seq_to``); a close made before reversals were wired
in has neither (None) and no reversals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.clock import china_datetime
from shared.errors import message
from shared.money import format_fen
from shared.protocol.messages import QUARANTINE_REASONS
from terminal.totals import METHOD_ZH, PERIOD_ZH, Line

PERIODS = ("breakfast", "lunch", "dinner", "shop")
METHODS = ("card", "qr", "face", "ecny")


@dataclass
class ItemLine:
    name: str
    qty: int = 0
    amount_fen: int = 0


@dataclass
class ZReport:
    number: int
    terminal_id: str
    canteen_id: str
    business_day: str  # YYYY-MM-DD (Asia/Shanghai) of the close
    closed_at_ms: int
    closed_by: str  # the operator card
    seq_from: int
    seq_to: int  # seq_from - 1 when the range holds no sale
    first_sale_ms: int | None = None
    last_sale_ms: int | None = None
    sales: Line = field(default_factory=Line)
    # 冲正: the reversals with rev_seq_from <= seq <= rev_seq_to (module doc); ``net``
    # subtracts them; the server compares them with those it applied.
    reversals: Line = field(default_factory=Line)
    by_period: dict[str, Line] = field(default_factory=dict)
    by_method: dict[str, Line] = field(default_factory=dict)
    shop_items: dict[str, ItemLine] = field(default_factory=dict)
    held_by_server: Line = field(default_factory=Line)
    rejected_by_server: Line = field(default_factory=Line)
    unsent: int = 0
    declines: int = 0
    # optional on the wire: a close made before reversals were wired in has none of these
    rev_seq_from: int | None = None
    rev_seq_to: int | None = None  # rev_seq_from - 1 when the range holds no reversal
    reversals_by_method: dict[str, Line] = field(default_factory=dict)
    reversals_rejected_by_server: Line = field(default_factory=Line)
    reversals_unsent: int = 0

    @property
    def net_fen(self) -> int:
        return self.sales.amount_fen - self.reversals.amount_fen

    @property
    def name(self) -> str:
        return f"Z{self.number:04d}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["net_fen"] = self.net_fen
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ZReport:
        d = {k: v for k, v in d.items() if k != "net_fen"}
        for key in (
            "sales",
            "reversals",
            "held_by_server",
            "rejected_by_server",
            "reversals_rejected_by_server",
        ):
            if key in d:
                d[key] = Line(**d[key])
        for key in ("by_period", "by_method", "reversals_by_method"):
            if key in d:
                d[key] = {k: Line(**v) for k, v in d[key].items()}
        d["shop_items"] = {k: ItemLine(**v) for k, v in d["shop_items"].items()}
        return cls(**d)


def add_reversals(z: ZReport, rows: Iterable[dict[str, Any]]) -> None:
    """Count the reversals of the close's range into ``z``: rows of the terminal's
    ``reversals`` (``amount_fen``, ``method``, ``status``: new/waiting/applied/rejected)."""
    for r in rows:
        amount = int(r["amount_fen"])
        z.reversals.add(amount)
        z.reversals_by_method.setdefault(r["method"], Line()).add(amount)
        if r["status"] == "rejected":
            z.reversals_rejected_by_server.add(amount)


def build(
    *,
    number: int,
    terminal_id: str,
    canteen_id: str,
    closed_at_ms: int,
    closed_by: str,
    seq_from: int,
    seq_to: int,
    sales: Iterable[dict[str, Any]],
    item_names: dict[str, str],
    declines: int,
    unsent: int,
    rev_seq_from: int = 1,
    rev_seq_to: int = 0,
    reversals: Iterable[dict[str, Any]] = (),
    reversals_unsent: int = 0,
) -> ZReport:
    """The report of one close. ``sales``: journal rows of the range (``occurred_at_ms``,
    ``kind``, ``meal_period``, ``method``, ``amount_fen``, ``status``, ``reason``,
    ``sale_json``); ``item_names``: sku → the shop item's name in the price list;
    ``reversals``: the terminal's reversal rows with ``rev_seq_from ≤ seq ≤ rev_seq_to``
    (:func:`add_reversals`)."""
    z = ZReport(
        number=number,
        terminal_id=terminal_id,
        canteen_id=canteen_id,
        business_day=china_datetime(closed_at_ms).date().isoformat(),
        closed_at_ms=closed_at_ms,
        closed_by=closed_by,
        seq_from=seq_from,
        seq_to=seq_to,
        unsent=unsent,
        declines=declines,
        rev_seq_from=rev_seq_from,
        rev_seq_to=rev_seq_to,
        reversals_unsent=reversals_unsent,
    )
    add_reversals(z, reversals)
    for s in sales:
        amount, at = int(s["amount_fen"]), int(s["occurred_at_ms"])
        z.first_sale_ms = at if z.first_sale_ms is None else min(z.first_sale_ms, at)
        z.last_sale_ms = at if z.last_sale_ms is None else max(z.last_sale_ms, at)
        z.sales.add(amount)
        period = s["meal_period"] if s["kind"] == "meal" else "shop"
        z.by_period.setdefault(period, Line()).add(amount)
        z.by_method.setdefault(s["method"], Line()).add(amount)
        if s["status"] == "rejected":
            held = s.get("reason") in QUARANTINE_REASONS
            (z.held_by_server if held else z.rejected_by_server).add(amount)
        if s["kind"] == "shop":
            for item in json.loads(s["sale_json"]).get("items") or ():
                sku = item["sku"]
                line = z.shop_items.setdefault(sku, ItemLine(item_names.get(sku, sku)))
                line.qty += item["qty"]
                line.amount_fen += item["qty"] * item["unit_price_fen"]
    return z


def _when(ms: int | None) -> str:
    return china_datetime(ms).strftime("%Y-%m-%d %H:%M:%S") if ms else "—"


def _row(label: str, line: Line) -> str:
    return f"  {label:<10}{line.count:>6} 笔 {format_fen(line.amount_fen):>14}"


def _rev_range(z: ZReport) -> str:
    if z.rev_seq_from is None or z.rev_seq_to is None:
        return "冲正序号 —"
    return f"冲正序号 {z.rev_seq_from}–{z.rev_seq_to}" if z.rev_seq_to >= z.rev_seq_from else "冲正序号 无"


def render_zh(z: ZReport) -> str:
    """The report as the file kept on the terminal (Simplified Chinese)."""
    out = [
        f"日结报表 {z.name}",
        f"终端 {z.terminal_id} · 食堂 {z.canteen_id} · 营业日 {z.business_day}",
        f"日结时间 {_when(z.closed_at_ms)} · 操作员卡 {z.closed_by}",
        f"交易序号 {z.seq_from}–{z.seq_to}" if z.seq_to >= z.seq_from else "交易序号 无",
        _rev_range(z),
        f"首笔 {_when(z.first_sale_ms)} · 末笔 {_when(z.last_sale_ms)}",
        "",
        _row("消费合计", z.sales),
        _row("冲正合计", z.reversals),
        f"  {'净额':<10}{'':>8} {format_fen(z.net_fen):>14}",
        "",
        "按餐次:",
    ]
    out += [_row(PERIOD_ZH[k], z.by_period[k]) for k in PERIODS if k in z.by_period] or ["  无"]
    out.append("按支付方式:")
    out += [_row(METHOD_ZH[k], z.by_method[k]) for k in METHODS if k in z.by_method] or ["  无"]
    out.append("冲正按支付方式:")
    out += [_row(METHOD_ZH[k], z.reversals_by_method[k]) for k in METHODS if k in z.reversals_by_method] or [
        "  无"
    ]
    out.append("超市商品:")
    out += [
        f"  {sku:<12} {line.name:<10} {line.qty:>5} 件 {format_fen(line.amount_fen):>12}"
        for sku, line in sorted(z.shop_items.items())
    ] or ["  无"]
    out.append("")
    if z.held_by_server.count:
        out.append(_row("服务器待审核", z.held_by_server) + "（已计入消费合计）")
    if z.rejected_by_server.count:
        out.append(_row("服务器拒绝", z.rejected_by_server) + "（已计入消费合计）")
    if z.reversals_rejected_by_server.count:
        out.append(_row("服务器拒绝冲正", z.reversals_rejected_by_server) + "（已计入冲正合计）")
    out += [
        f"  未上传交易 {z.unsent:>6} 笔",
        f"  未上传冲正 {z.reversals_unsent:>6} 笔",
        f"  拒绝交易   {z.declines:>6} 次",
        "",
        f"（{message('day_close_mismatch')}时，服务器日结核对报告会标出差异）",
    ]
    return "\n".join(out) + "\n"


def screen_lines(z: ZReport) -> tuple[str, ...]:
    """Four short lines for the customer display."""
    return (
        f"日结 {z.name} {z.business_day}",
        f"消费 {z.sales.count}笔 {format_fen(z.sales.amount_fen)}",
        f"冲正 {z.reversals.count}笔 净额 {format_fen(z.net_fen)}",
        f"未上传 {z.unsent}笔 报表已保存",
    )
