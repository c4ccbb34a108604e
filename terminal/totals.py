"""The operator's day totals (当日汇总): a pure summary of this terminal's journal.

:func:`day_totals` reads one day (Asia/Shanghai) of the journal and the declines through a
:class:`~terminal.store.Store`; :func:`summarize` is the pure part (rows in, totals out);
:func:`render_zh` prints them for ``canteen-terminal totals`` and :func:`screen_lines`
condenses them for the customer display when an operator card is tapped.

The numbers are this terminal's: every sale it journaled that day (sales the server later
rejected, or held for an admin's review (quarantined), are counted apart and not in the
amounts), per meal period, per payment method,
own-unit staff vs. visitors, declines by reason, plus what is still unsent and when the
terminal last synced. Reversals (冲正, ``terminal.reversals``) of the day are counted apart
(``reversals``) and taken off the sales for the ``net_fen``; a reversal the server refused,
or of a sale it did not apply, takes nothing off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from shared.clock import CHINA_TZ, china_datetime
from shared.errors import message
from shared.money import format_fen
from shared.protocol.messages import QUARANTINE_REASONS

METHOD_ZH = {"card": "刷卡", "qr": "扫码", "face": "刷脸", "ecny": "数字人民币"}
PERIOD_ZH = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐", "shop": "超市"}


@dataclass
class Line:
    count: int = 0
    amount_fen: int = 0

    def add(self, amount_fen: int) -> None:
        self.count += 1
        self.amount_fen += amount_fen


@dataclass
class DayTotals:
    day: str
    canteen_id: str
    terminal_id: str
    total: Line = field(default_factory=Line)
    by_period: dict[str, Line] = field(default_factory=dict)  # breakfast/lunch/dinner/shop
    by_method: dict[str, Line] = field(default_factory=dict)
    staff: Line = field(default_factory=Line)  # own-unit staff (本单位)
    visitors: Line = field(default_factory=Line)  # other units (外单位)
    offline: Line = field(default_factory=Line)
    rejected_by_server: Line = field(default_factory=Line)
    held_by_server: Line = field(default_factory=Line)  # quarantined: waiting for an admin's review
    declines: dict[str, int] = field(default_factory=dict)
    unsent_sales: int = 0
    last_sync_ms: int | None = None
    online: bool = False
    reversals: Line = field(default_factory=Line)  # 冲正: sales given back today
    net_fen: int = 0  # total less reversals

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def day_bounds_ms(day: date) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=CHINA_TZ)
    return int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000)


def summarize(
    day: str,
    canteen_id: str,
    terminal_id: str,
    sales: Iterable[dict[str, Any]],
    declines: Iterable[str],
    *,
    unsent_sales: int,
    last_sync_ms: int | None,
    online: bool,
    reversals: Iterable[dict[str, Any]] = (),
) -> DayTotals:
    """``sales``: journal rows (kind, meal_period, method, visitor, offline, amount_fen,
    status); ``declines``: one reason code per declined tap; ``reversals``: the day's
    reversals (amount_fen, status, sale_status)."""
    t = DayTotals(
        day, canteen_id, terminal_id, unsent_sales=unsent_sales, last_sync_ms=last_sync_ms, online=online
    )
    for s in sales:
        amount = int(s["amount_fen"])
        if s["status"] == "rejected":
            held = s.get("reason") in QUARANTINE_REASONS
            (t.held_by_server if held else t.rejected_by_server).add(amount)
            continue
        t.total.add(amount)
        period = s["meal_period"] if s["kind"] == "meal" else "shop"
        t.by_period.setdefault(period, Line()).add(amount)
        t.by_method.setdefault(s["method"], Line()).add(amount)
        (t.visitors if s["visitor"] else t.staff).add(amount)
        if s["offline"]:
            t.offline.add(amount)
    for reason in declines:
        t.declines[reason] = t.declines.get(reason, 0) + 1
    for r in reversals:
        if r["status"] != "rejected" and r["sale_status"] != "rejected":
            t.reversals.add(int(r["amount_fen"]))
    t.net_fen = t.total.amount_fen - t.reversals.amount_fen
    return t


def day_totals(
    store: Any, day: date, canteen_id: str, terminal_id: str, *, online: bool = False
) -> DayTotals:
    """The totals of ``day`` from the store (a :class:`terminal.store.Store`)."""
    lo, hi = day_bounds_ms(day)
    sales = store.conn.execute(
        "SELECT kind, meal_period, method, visitor, offline, amount_fen, status, reason FROM journal "
        "WHERE occurred_at_ms >= ? AND occurred_at_ms < ?",
        (lo, hi),
    ).fetchall()
    declines = [
        r[0]
        for r in store.conn.execute("SELECT reason FROM declines WHERE at_ms >= ? AND at_ms < ?", (lo, hi))
    ]
    reversals = store.conn.execute(
        "SELECT r.amount_fen, r.status, j.status AS sale_status FROM reversals r "
        "JOIN journal j ON j.seq = r.sale_seq WHERE r.occurred_at_ms >= ? AND r.occurred_at_ms < ?",
        (lo, hi),
    ).fetchall()
    last_sync = store.get_meta("last_sync_ms")
    return summarize(
        day.isoformat(),
        canteen_id,
        terminal_id,
        [dict(r) for r in sales],
        declines,
        unsent_sales=store.pending_count(),
        last_sync_ms=int(last_sync) if last_sync else None,
        online=online,
        reversals=[dict(r) for r in reversals],
    )


def _when(ms: int | None) -> str:
    return china_datetime(ms).strftime("%Y-%m-%d %H:%M:%S") if ms else "从未"


def render_zh(t: DayTotals) -> str:
    """The day's totals as the operator reads them (Simplified Chinese)."""
    out = [
        f"{t.day} 当日汇总 · 食堂 {t.canteen_id} · 终端 {t.terminal_id}",
        f"  合计          {t.total.count:>5} 笔  {format_fen(t.total.amount_fen):>12}",
        "  按餐次:",
    ]
    for key in ("breakfast", "lunch", "dinner", "shop"):
        if key in t.by_period:
            line = t.by_period[key]
            out.append(f"    {PERIOD_ZH[key]:<8}  {line.count:>5} 笔  {format_fen(line.amount_fen):>12}")
    out.append("  按支付方式:")
    for key in ("card", "qr", "face", "ecny"):
        if key in t.by_method:
            line = t.by_method[key]
            out.append(f"    {METHOD_ZH[key]:<8}  {line.count:>5} 笔  {format_fen(line.amount_fen):>12}")
    out += [
        f"  本单位职工    {t.staff.count:>5} 笔  {format_fen(t.staff.amount_fen):>12}",
        f"  外单位来客    {t.visitors.count:>5} 笔  {format_fen(t.visitors.amount_fen):>12}",
        f"  其中离线交易  {t.offline.count:>5} 笔  {format_fen(t.offline.amount_fen):>12}",
        f"  冲正          {t.reversals.count:>5} 笔  {format_fen(-t.reversals.amount_fen):>12}",
        f"  净额                    {format_fen(t.net_fen):>12}",
    ]
    if t.rejected_by_server.count:
        out.append(
            f"  服务器拒绝    {t.rejected_by_server.count:>5} 笔  "
            f"{format_fen(t.rejected_by_server.amount_fen):>12}（未计入合计）"
        )
    if t.held_by_server.count:
        held = t.held_by_server
        out.append(f"  服务器待审核  {held.count:>5} 笔  {format_fen(held.amount_fen):>12}（未计入合计）")
    out.append("  拒绝交易:" + ("" if t.declines else " 无"))
    for reason, n in sorted(t.declines.items(), key=lambda kv: (-kv[1], kv[0])):
        out.append(f"    {message(reason)}（{reason}） {n} 次")
    out += [
        f"  未上传交易    {t.unsent_sales:>5} 笔",
        f"  上次同步      {_when(t.last_sync_ms)}",
        f"  网络状态      {'在线' if t.online else '【离线】'}",
    ]
    return "\n".join(out)


def screen_lines(t: DayTotals) -> tuple[str, ...]:
    """A few short lines for the customer display (operator card tapped)."""
    periods = " ".join(
        f"{PERIOD_ZH[k]}{t.by_period[k].count}"
        for k in ("breakfast", "lunch", "dinner", "shop")
        if k in t.by_period
    )
    return (
        f"当日汇总 {t.day}",
        f"合计 {t.total.count}笔 {format_fen(t.total.amount_fen)}",
        periods or "暂无交易",
        f"冲正 {t.reversals.count}笔 净额 {format_fen(t.net_fen)}",
        f"外单位 {t.visitors.count}笔 拒绝 {sum(t.declines.values())}次",
        f"未上传 {t.unsent_sales}笔 {'在线' if t.online else '离线'}",
    )
