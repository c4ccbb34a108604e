"""Domain errors with stable codes, defined once.

Every refusal in the system has a stable ``code`` (``insufficient_balance``,
``card_blocked`` …). The code is what machines see (JSON errors, MQTT rejections, exit
codes); the zh-CN and English texts are what people see. Edges (HTTP, MQTT, CLI, the
terminal display) turn a :class:`DomainError` into their own form with :func:`message`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorSpec:
    zh: str
    en: str
    http_status: int = 400


CATALOG: dict[str, ErrorSpec] = {
    # protocol / transport
    "malformed": ErrorSpec("消息格式错误", "malformed message"),
    "bad_schema_version": ErrorSpec("协议版本不支持", "unsupported schema version"),
    "bad_field": ErrorSpec("字段缺失或类型错误", "missing or mistyped field"),
    "bad_signature": ErrorSpec("签名校验失败", "signature check failed", 401),
    "unknown_terminal": ErrorSpec("未登记的终端", "unknown terminal", 401),
    "terminal_mismatch": ErrorSpec("终端身份不符", "terminal id does not match topic or sale", 401),
    "too_large": ErrorSpec("消息过大", "message too large", 413),
    "sale_id_conflict": ErrorSpec("交易编号冲突", "sale id reused with different content", 409),
    "stale_message": ErrorSpec("消息已过期", "message is older than the last one seen"),
    # authorization at the terminal / sale application
    "card_unknown": ErrorSpec("卡片未登记", "unknown card", 404),
    "card_blocked": ErrorSpec("卡片已挂失或停用", "card is blocked"),
    "insufficient_balance": ErrorSpec("余额不足", "insufficient balance"),
    "outside_meal_hours": ErrorSpec("不在供餐时间", "outside meal hours"),
    "meal_limit_reached": ErrorSpec("本餐次已就餐", "meal already taken this period"),
    "offline_limit_reached": ErrorSpec("离线消费已达上限，请联网后再试", "offline limit reached"),
    "denylist_too_old": ErrorSpec("黑名单过期，暂停离线消费", "deny-list too old for offline sales"),
    "terminal_offline_too_long": ErrorSpec("终端离线过久，暂停消费", "terminal offline too long"),
    "clock_skew": ErrorSpec("终端时钟异常，暂停离线消费", "terminal clock is off"),
    "amount_too_large": ErrorSpec("单笔金额超限", "amount above the per-sale limit"),
    "bad_amount": ErrorSpec("金额格式错误（最多两位小数）", "bad amount (at most two decimals)"),
    "price_above_reference": ErrorSpec("售价高于市场参考价", "price above the reference store price"),
    "unknown_item": ErrorSpec("商品不存在", "unknown item", 404),
    "unknown_canteen": ErrorSpec("食堂不存在", "unknown canteen", 404),
    "canteen_mismatch": ErrorSpec("终端不属于该食堂", "terminal does not belong to that canteen"),
    "operator_card": ErrorSpec("管理卡：显示当日汇总，不扣款", "operator card: shows the day's totals, no charge"),
    # registry / money lifecycle
    "not_found": ErrorSpec("记录不存在", "not found", 404),
    "already_exists": ErrorSpec("记录已存在", "already exists", 409),
    "invalid_input": ErrorSpec("输入有误", "invalid input"),
    "period_closed": ErrorSpec("该期间已结账", "period already closed", 409),
    "forbidden": ErrorSpec("无权限", "forbidden", 403),
    "unauthenticated": ErrorSpec("未登录或令牌无效", "missing or invalid token", 401),
}


class DomainError(Exception):
    """A refusal with a stable code. ``detail`` says what exactly was wrong (English)."""

    def __init__(self, code: str, detail: str = "", **context: object) -> None:
        if code not in CATALOG:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.detail = detail
        self.context = context
        super().__init__(f"{code}: {detail}" if detail else code)

    @property
    def http_status(self) -> int:
        return CATALOG[self.code].http_status

    def to_json(self, lang: str = "en") -> dict[str, object]:
        return {"code": self.code, "message": message(self.code, lang), "detail": self.detail}


def message(code: str, lang: str = "zh") -> str:
    """The human text for a code, in zh-CN (default, what diners see) or English."""
    spec = CATALOG.get(code)
    if spec is None:
        return code
    return spec.zh if lang.startswith("zh") else spec.en
