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
    "unknown_change_kind": ErrorSpec(
        "未知的下发数据类型，终端软件可能需要升级",
        "unknown kind of downstream change: the terminal software may be too old",
    ),
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
    # identification: NFC cards, QR payment codes, digital RMB (数字人民币)
    "card_not_secure": ErrorSpec(
        "本食堂不接受无加密验证的卡片", "this canteen does not accept UID-only cards"
    ),
    "card_auth_failed": ErrorSpec("卡片验证失败", "card authentication failed"),
    "card_replayed": ErrorSpec("卡片验证失败（疑似复制卡）", "card message replayed or cloned"),
    "qr_invalid": ErrorSpec("付款码无效", "not a valid payment code"),
    "qr_expired": ErrorSpec("付款码已过期，请刷新后重试", "payment code expired; refresh it"),
    "qr_reused": ErrorSpec("付款码已使用，请刷新后重试", "payment code already used; refresh it"),
    "qr_no_credential": ErrorSpec("未开通扫码支付或付款码凭证已失效", "no valid QR payment credential"),
    "qr_double_spent": ErrorSpec("付款码在多台终端重复使用", "payment code spent at two terminals", 409),
    "ecny_offline": ErrorSpec(
        "网络离线，暂不支持数字人民币，请改用刷卡、扫码或刷脸支付",
        "digital RMB needs the network; please pay by card, QR code or face",
    ),
    "ecny_unavailable": ErrorSpec(
        "数字人民币通道暂不可用，请改用其他支付方式", "digital RMB gateway unreachable", 503
    ),
    "ecny_declined": ErrorSpec("数字人民币支付失败", "digital RMB payment declined", 402),
    "ecny_insufficient_funds": ErrorSpec("数字人民币钱包余额不足", "digital RMB wallet balance too low", 402),
    "ecny_bad_callback": ErrorSpec(
        "数字人民币支付通知签名无效", "digital RMB gateway callback signature invalid"
    ),
    "ecny_refund_too_large": ErrorSpec("退款金额超过原交易金额", "refund exceeds the payment"),
    "reader_error": ErrorSpec("读卡器故障，请联系管理员", "card reader error", 503),
    "scanner_error": ErrorSpec("扫码器故障，请联系管理员", "QR scanner error", 503),
    "operator_card": ErrorSpec(
        "管理卡：显示当日汇总，不扣款", "operator card: shows the day's totals, no charge"
    ),
    # registry / money lifecycle
    "not_found": ErrorSpec("记录不存在", "not found", 404),
    "already_exists": ErrorSpec("记录已存在", "already exists", 409),
    "invalid_input": ErrorSpec("输入有误", "invalid input"),
    "internal_error": ErrorSpec("系统内部错误，请稍后重试", "internal error", 500),
    "period_closed": ErrorSpec("该期间已结账", "period already closed", 409),
    "period_open": ErrorSpec("该期间尚未结束，不能结账", "period has not ended yet", 409),
    "period_out_of_order": ErrorSpec("请按顺序结账", "periods must be closed in order", 409),
    "terminals_behind": ErrorSpec(
        "有终端尚未上报至期末，请稍后或强制结账", "some terminals have not reported past the period end", 409
    ),
    "already_rated": ErrorSpec("该笔消费已评价", "this sale has already been rated", 409),
    "not_your_sale": ErrorSpec("只能评价本人的消费", "you can only rate your own sales", 403),
    "forbidden": ErrorSpec("无权限", "forbidden", 403),
    "unauthenticated": ErrorSpec("未登录或令牌无效", "missing or invalid token", 401),
    # registry: imports, cards, leavers
    "import_rejected": ErrorSpec("导入文件有误，未导入任何数据", "import refused: nothing was imported", 422),
    "card_not_active": ErrorSpec("卡片不是正常状态", "the card is not active", 409),
    "holder_left": ErrorSpec("该人员已离职", "the cardholder has left", 409),
    "holder_active": ErrorSpec(
        "在职人员不能退款（不得提现）", "no refunds for active cardholders (no cash withdrawal)", 409
    ),
    "no_bank_account": ErrorSpec("未登记本人银行账户", "no own bank account registered", 409),
    "nothing_to_refund": ErrorSpec("自费余额为零，无需退款", "nothing left in the self purse", 409),
    "terminals_pending": ErrorSpec(
        "仍有终端未上传离职前的消费，请稍后审批",
        "terminals may still hold sales from before the leave date",
        409,
    ),
    "refund_decided": ErrorSpec("该退款申请已处理", "refund request already decided", 409),
    # face pay: enrollment (server) and recognition (terminal)
    "face_not_found": ErrorSpec("照片中未检测到人脸", "no face found in the photo"),
    "face_multiple": ErrorSpec("照片中有多张人脸，请只拍一人", "more than one face in the photo"),
    "face_too_small": ErrorSpec("人脸太小，请靠近重拍", "face too small in the photo"),
    "face_conflict": ErrorSpec(
        "该人脸与他人已登记的人脸过于相似", "face too similar to another person's", 409
    ),
    "face_limit_reached": ErrorSpec(
        "已登记的人脸数量已达上限", "too many faces enrolled for this person", 409
    ),
    "face_not_recognized": ErrorSpec("未识别，请刷卡或重试", "face not recognised"),
    "face_one_at_a_time": ErrorSpec("请一人一次刷脸", "more than one face in front of the camera"),
    "second_factor_failed": ErrorSpec("卡号后四位不符", "card number digits do not match"),
    "input_timeout": ErrorSpec("输入超时", "no input in time"),
    # a clerk's / operator's first day: terminal configuration, terminal CLI, qr-issue (issue 12)
    "config_invalid": ErrorSpec("配置文件有误", "the configuration file is invalid"),
    "terminal_db_missing": ErrorSpec(
        "终端数据库不存在（请检查配置文件，或先运行终端）", "the terminal database does not exist", 404
    ),
    "public_url_missing": ErrorSpec(
        "未配置服务器对外地址（PUBLIC_URL）", "the server's public address (PUBLIC_URL) is not configured"
    ),
    # amounts, ceilings and second approval of refunds (issue 11: one amount domain)
    "amount_out_of_range": ErrorSpec(
        "金额或余额超出系统可处理的范围，未执行",
        "amount or resulting balance outside the range the system carries",
    ),
    "amount_above_ceiling": ErrorSpec(
        "金额超过单笔上限，未执行；如确需办理请联系管理员调整上限",
        "amount above the ceiling for this operation; an administrator can change the ceiling",
    ),
    "change_not_carriable": ErrorSpec(
        "该变更无法下发到终端，未执行", "the change could not be sent to terminals; nothing was done"
    ),
    "second_approval_needed": ErrorSpec(
        "收款账户近期变更过，需另一位管理员复核",
        "the bank account changed recently: another administrator must approve as well",
        409,
    ),
    # the clerk's command line (issue 12): no data folder yet, nothing to clear, signed amounts
    "no_database": ErrorSpec(
        "数据目录中没有数据库：请先运行 canteen-server init，或设置 CANTEEN_HOME 指向已有的数据目录",
        "no database in the data folder: run canteen-server init first, or set CANTEEN_HOME"
        " to the existing data folder",
        409,
    ),
    "nothing_to_clear": ErrorSpec(
        "该年度没有可清零的补贴，未执行清零（确需执行请加 --force）",
        "nothing to clear for that year; nothing was done (add --force to record it anyway)",
        409,
    ),
    "amount_not_positive": ErrorSpec("金额必须大于零", "the amount must be positive"),
    # hardening (issue 11): request size, tokens, terminal request replay, other units' data
    "request_too_large": ErrorSpec("请求内容过大，已拒绝", "request body too large", 413),
    "token_expired": ErrorSpec("令牌已过期，请向管理员重新申请", "token expired", 401),
    "token_revoked": ErrorSpec("令牌已被吊销", "token revoked", 401),
    "request_replayed": ErrorSpec("重复的终端请求，已拒绝", "terminal request replayed", 401),
    "card_registered_elsewhere": ErrorSpec(
        "该卡号已在其他单位登记，请核对卡号或联系管理员",
        "this card number is already registered elsewhere",
        409,
    ),
    # broker lock-down, presence freshness, duplicate terminal identity, e-CNY gateway choice
    # (issue 11)
    "terminal_identity_duplicate": ErrorSpec(
        "终端身份重复，请联系管理员", "two running terminals use one terminal's identity", 409
    ),
    "terminal_revoked": ErrorSpec("终端已停用", "terminal revoked", 401),
    "ecny_not_configured": ErrorSpec("未配置数字人民币支付通道", "no digital RMB gateway is configured", 404),
    # --- sale quarantine (issue 11): sales the server holds back for an admin's review ---
    "sale_over_limit": ErrorSpec(
        "单笔金额超过食堂限额，待审核", "sale above the canteen's per-sale limit; held for review"
    ),
    "sale_over_offline_limit": ErrorSpec(
        "离线消费超过离线限额，待审核", "offline sale beyond the offline limits; held for review"
    ),
    "sale_price_mismatch": ErrorSpec(
        "金额与价目表不符，待审核", "amount does not match the prices in force; held for review"
    ),
    "sale_unknown_item": ErrorSpec(
        "商品不在价目表中，待审核", "item not on the canteen's price list; held for review"
    ),
    "sale_unknown_meal_period": ErrorSpec(
        "食堂无此餐次，待审核", "the canteen has no such meal period; held for review"
    ),
    "sale_time_future": ErrorSpec(
        "消费时间晚于当前时间，待审核", "sale dated in the future; held for review"
    ),
    "sale_time_before_terminal": ErrorSpec(
        "消费时间早于终端启用时间，待审核", "sale dated before the terminal was provisioned; held for review"
    ),
    "quarantine_rejected": ErrorSpec("管理员已拒绝该笔待审核消费", "an admin rejected this held sale"),
    "quarantine_decided": ErrorSpec(
        "该笔消费已审核，不能重复处理", "this held sale was already decided", 409
    ),
    "quarantine_not_found": ErrorSpec("没有这笔待审核消费", "no such held sale", 404),
    # --- payment PIN above the no-PIN limit (issue 12, 小额免密) ---
    "pin_required": ErrorSpec(
        "超过免密限额，请输入支付密码", "above the no-PIN limit: the payment PIN is required"
    ),
    "pin_offline": ErrorSpec(
        "离线状态下超过免密限额，无法支付", "offline: a sale above the no-PIN limit cannot be made"
    ),
    "pin_wrong": ErrorSpec("支付密码错误", "wrong payment PIN", 403),
    "pin_locked": ErrorSpec(
        "支付密码已锁定，请明日再试或联系管理员",
        "payment PIN locked until tomorrow; ask an administrator",
        423,
    ),
    "pin_not_set": ErrorSpec(
        "未设置支付密码，请先设置或联系单位经办人", "no payment PIN set for this cardholder", 409
    ),
    "pin_invalid": ErrorSpec("支付密码须为6位数字", "a payment PIN is exactly 6 digits"),
    "pin_too_simple": ErrorSpec(
        "支付密码过于简单（不能全部相同或连续），请重新设置",
        "PIN too simple (all digits the same, or a run like 123456)",
    ),
    "sale_pin_invalid": ErrorSpec(
        "超过免密限额的消费无有效密码验证，待审核",
        "sale above the no-PIN limit without a valid PIN approval; held for review",
    ),
    # year-end clearing by year (issue 12): last year's subsidy is not spent from 1 January
    "subsidy_expired": ErrorSpec(
        "补贴已到期，待年末清算", "last year's subsidy has expired and awaits the year-end clearing"
    ),
    # barcodes on shop items (issue 13: the cashier at the terminal)
    "barcode_invalid": ErrorSpec(
        "商品条码无效（须为校验位正确的 EAN-13、EAN-8 或 UPC-A）",
        "not a valid product barcode (EAN-13, EAN-8 or UPC-A with a correct check digit)",
    ),
    "barcode_taken": ErrorSpec(
        "该条码已属于本食堂的另一商品", "this barcode already belongs to another item of this canteen", 409
    ),
    "barcode_unknown": ErrorSpec("本食堂没有此条码的商品", "no item of this canteen has this barcode", 404),
    "scan_unrecognised": ErrorSpec(
        "无法识别：既不是付款码，也不是商品条码", "neither a payment code nor a product barcode"
    ),
    # scale-out (issue 16): jobs one process at a time, database choice, terminal ids
    "job_running": ErrorSpec(
        "该作业正在另一个服务器进程中运行，未重复执行；请稍后再试",
        "that job is running in another server process; nothing was done here, try again later",
        409,
    ),
    "database_not_empty": ErrorSpec(
        "目标数据库已有数据，未导入（请使用新建的空数据库）",
        "the target database already holds data; nothing was imported (use a new, empty database)",
        409,
    ),
    "bad_terminal_id": ErrorSpec(
        "终端编号只能由字母、数字、- 和 _ 组成，最长 32 位",
        "a terminal id is 1 to 32 letters, digits, - or _",
    ),
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


def refusal_text(exc: DomainError) -> str:
    """The one form of a refusal on a command line (server and terminal alike), two lines::

        错误：<中文说明>（code）[：<中文细节>]
        error: <English message>[: <detail>]

    The Chinese detail is the error's ``zh`` context when it has one (the English detail
    is never shown as Chinese)."""
    zh_detail = exc.context.get("zh")
    zh = f"错误：{message(exc.code, 'zh')}（{exc.code}）" + (f"：{zh_detail}" if zh_detail else "")
    en = f"error: {message(exc.code, 'en')}" + (f": {exc.detail}" if exc.detail else "")
    return f"{zh}\n{en}"
