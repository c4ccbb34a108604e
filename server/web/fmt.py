"""How the console shows things to people: amounts, Beijing times, names of codes.

Template filters (registered by :mod:`server.web.site`): ``yuan`` (``¥12.50``, through the one
formatter :func:`shared.money.format_fen`), ``china_time`` (Asia/Shanghai, through
:func:`shared.clock.china_datetime`), ``role_zh``, ``method_zh``, ``meal_zh``.
"""

from __future__ import annotations

from server.registry.canteen_config import MEAL_NAMES_ZH
from shared.clock import china_datetime
from shared.money import format_fen

ROLE_NAMES = {
    "admin": "管理员",
    "clerk": "单位经办人",
    "operator": "食堂运营方",
    "auditor": "审计",
    "diner": "就餐人员",
}
METHOD_NAMES = {"card": "刷卡", "qr": "扫码", "face": "刷脸", "ecny": "数字人民币"}
HOLDER_STATUS = {"active": "在职", "left": "已离职"}
CARD_STATUS = {"active": "正常", "lost": "已挂失", "retired": "已注销"}
DASH = "—"


def yuan(amount_fen: int | None) -> str:
    return DASH if amount_fen is None else format_fen(int(amount_fen))


def china_time(ms: int | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return DASH if ms is None else china_datetime(int(ms)).strftime(fmt)


def role_zh(role: str) -> str:
    return ROLE_NAMES.get(role, role)


def method_zh(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def meal_zh(period: str | None) -> str:
    return MEAL_NAMES_ZH.get(period or "", period or DASH)


def duration_zh(ms: int | None) -> str:
    """A span for people: ``45 秒``, ``12 分钟``, ``3 小时``, ``2 天``."""
    if ms is None:
        return DASH
    s = abs(int(ms)) // 1000
    if s < 60:
        return f"{s} 秒"
    if s < 3600:
        return f"{s // 60} 分钟"
    if s < 86400:
        return f"{s // 3600} 小时"
    return f"{s // 86400} 天"


FILTERS = {
    "yuan": yuan,
    "china_time": china_time,
    "role_zh": role_zh,
    "method_zh": method_zh,
    "meal_zh": meal_zh,
    "duration_zh": duration_zh,
    "holder_status_zh": lambda s: HOLDER_STATUS.get(s, s),
    "card_status_zh": lambda s: CARD_STATUS.get(s, s),
}
