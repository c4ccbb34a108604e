"""A cardholder's sales as a table: when, where, what, how much, and which purse paid it.

Shared by the diner's own page and the staff's person page (each adds the holder's scope).
A sale's ``subsidy_fen`` and ``self_fen`` say how much the subsidy purse (就餐经费) and the
self purse (自费) paid; ``overdraft_fen`` what went below zero offline.
"""

from __future__ import annotations

from typing import Any

from server.web.fmt import meal_zh, method_zh
from server.web.tables import Column, Table

HISTORY = Table(
    name="history",
    columns=(
        Column("occurred_at_ms", "时间", "s.occurred_at_ms", "time"),
        Column("canteen_name", "食堂", "canteen_name"),
        Column("what", "项目"),
        Column("method_zh", "支付方式"),
        Column("amount_fen", "金额", "s.amount_fen", "fen"),
        Column("subsidy_fen", "就餐经费支付", None, "fen"),
        Column("self_fen", "自费支付", None, "fen"),
    ),
    select_sql=(
        "SELECT s.uuid AS uuid, s.terminal_id AS terminal_id, s.seq AS seq, "
        "s.occurred_at_ms AS occurred_at_ms, coalesce(c.name, s.canteen_id) AS canteen_name, s.kind AS kind, "
        "s.meal_period AS meal_period, s.method AS method, s.amount_fen AS amount_fen, "
        "s.subsidy_fen AS subsidy_fen, s.self_fen AS self_fen, s.overdraft_fen AS overdraft_fen "
        "FROM sales s LEFT JOIN canteens c ON c.id = s.canteen_id"
    ),
    default_sort="occurred_at_ms",
    default_desc=True,
    tie_break="s.uuid",
    search_sql="(coalesce(c.name, s.canteen_id) LIKE ? ESCAPE '\\')",
    search_args=lambda q: ["%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"],
    page_size=20,
    search_label="按食堂搜索",
)
WHERE = "s.holder_id = ? AND s.status = 'applied'"


def decorate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add what people read: the meal or 小卖部, the payment method in Chinese."""
    for r in rows:
        r["what"] = meal_zh(r["meal_period"]) if r["kind"] == "meal" else "商品"
        r["method_zh"] = method_zh(r["method"])
    return rows
