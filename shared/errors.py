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
    # --- the web console's log-in (issue 14: staff and diner accounts, sessions, forms) ---
    "login_failed": ErrorSpec("用户名或密码错误", "wrong user name or password", 401),
    "account_locked": ErrorSpec(
        "连续登录失败次数过多，账户已锁定 15 分钟",
        "too many failed log-ins: the account is locked for 15 minutes",
        423,
    ),
    "password_weak": ErrorSpec(
        "密码至少 8 位，须同时包含字母和数字，且不能与用户名相同",
        "a password has at least 8 characters, letters and digits, and is not the user name",
    ),
    "password_reused": ErrorSpec("新密码不能与原密码相同", "the new password must differ from the old one"),
    "activation_invalid": ErrorSpec(
        "工号或激活码错误，或激活码已过期",
        "wrong staff number or activation code, or the code has expired",
        401,
    ),
    "session_expired": ErrorSpec("登录已超时，请重新登录", "the session has ended; log in again", 401),
    "form_expired": ErrorSpec(
        "页面已过期，请刷新页面后重试", "the form has expired (CSRF check); reload the page"
    ),
    # signed updates of terminal software and board firmware (issue 15, shared.release)
    "update_malformed": ErrorSpec("更新包格式错误", "not a valid update bundle"),
    "update_bad_signature": ErrorSpec(
        "更新包签名无效，已拒绝安装", "update bundle signature invalid: refused", 401
    ),
    "update_corrupted": ErrorSpec(
        "更新包文件损坏（校验值不符），已拒绝安装", "update bundle file corrupted (hash mismatch): refused"
    ),
    "update_downgrade": ErrorSpec(
        "更新包版本不高于当前版本，已拒绝安装", "update version is not newer than the running one: refused"
    ),
    "update_too_old": ErrorSpec(
        "当前版本过旧，不能直接升级到该版本", "the running version is older than this update's minimum"
    ),
    "update_not_configured": ErrorSpec(
        "终端未配置软件更新（发布公钥或更新目录）",
        "updates are not configured on this terminal (release key or update folder)",
    ),
    "update_download_failed": ErrorSpec("更新包下载失败", "update bundle download failed"),
    "update_install_failed": ErrorSpec(
        "更新安装失败（无法写入磁盘）", "update could not be installed (disk)"
    ),
    "update_rolled_back": ErrorSpec(
        "新版本未能在限定时间内连通服务器，已自动回退",
        "the new version did not reach the server in time: rolled back",
    ),
    "update_unknown": ErrorSpec("没有这个更新包", "no such update bundle", 404),
    "release_key_missing": ErrorSpec(
        "没有发布密钥，请先运行 release-key-new", "no release key: run release-key-new first"
    ),
    "firmware_update_failed": ErrorSpec("外设板固件更新失败", "peripheral board firmware update failed"),
    # the cashier's shop checkout and the operator's day close (issue 13)
    "price_list_stale": ErrorSpec(
        "价格表已过期，请联网更新后再售", "the price list is older than allowed; sync before selling goods"
    ),
    "basket_empty": ErrorSpec("购物篮为空，请先扫描商品", "the basket is empty: scan an item first"),
    "basket_full": ErrorSpec("购物篮商品行数已满，请先结算", "the basket has as many lines as one sale may"),
    "basket_bad_quantity": ErrorSpec("数量无效（1–999）", "bad quantity (1–999)"),
    "typed_amount_not_allowed": ErrorSpec(
        "本食堂不允许手输金额", "this canteen does not allow a typed amount"
    ),
    "typed_amount_above_cap": ErrorSpec("手输金额超过本食堂上限", "typed amount above the canteen's cap"),
    "typed_amount_with_items": ErrorSpec(
        "手输金额不能与商品同时结算，请先清空购物篮", "a typed amount cannot be paid with scanned items"
    ),
    "sale_typed_amount": ErrorSpec(
        "手输金额不符合食堂规定，待审核",
        "typed shop amount the canteen does not allow, or above its cap; held for review",
    ),
    "day_close_invalid": ErrorSpec("日结报表格式有误", "malformed day close (Z-report)"),
    "day_close_conflict": ErrorSpec(
        "同一编号的日结报表内容不同", "a different day close with this number was already received", 409
    ),
    "day_close_mismatch": ErrorSpec(
        "日结报表与服务器入账不一致", "the day close differs from what the server applied"
    ),
    # backups and restore (issue 15, server.infra.backup)
    "backup_failed": ErrorSpec("备份失败", "the backup failed", 500),
    "backup_invalid": ErrorSpec("备份已损坏或不完整", "the backup is damaged or incomplete"),
    "backup_key_mismatch": ErrorSpec(
        "服务器密钥与该备份不符", "the server key does not match the one that made this backup"
    ),
    "restore_target_not_empty": ErrorSpec(
        "恢复目标目录不是空目录", "restore only into a fresh, empty data folder", 409
    ),
    "sale_not_found": ErrorSpec("服务器上没有这笔交易", "no such sale on this server", 404),
    # --- reversal (冲正) of a mistaken sale at its terminal (issue 13) ---
    "reversal_disabled": ErrorSpec("本食堂未开通冲正", "reversals are turned off for this canteen"),
    "reversal_outside_window": ErrorSpec("已超过冲正时限", "the sale is older than the reversal window"),
    "reversal_other_day": ErrorSpec(
        "只能冲正当日交易", "only a sale of the same business day can be reversed"
    ),
    "reversal_before_sale": ErrorSpec("冲正时间早于原交易", "reversal dated before its sale"),
    "reversal_time_future": ErrorSpec("冲正时间晚于当前时间", "reversal dated in the future"),
    "reversal_offline_limit": ErrorSpec(
        "离线冲正已达上限，请联网后再试", "offline reversal limit reached for today"
    ),
    "reversal_amount_mismatch": ErrorSpec("冲正金额与原交易不符", "reversal amount differs from the sale's"),
    "reversal_sale_mismatch": ErrorSpec(
        "冲正记录与原交易不符", "the reversal names a sale this terminal did not make"
    ),
    "reversal_sale_not_applied": ErrorSpec(
        "原交易未入账，无需冲正", "the sale was not applied: nothing to reverse"
    ),
    "sale_already_reversed": ErrorSpec("该笔交易已冲正", "this sale has already been reversed", 409),
    "reversal_id_conflict": ErrorSpec("冲正编号冲突", "reversal id reused with different content", 409),
    "reversal_no_sale": ErrorSpec("没有可冲正的交易", "no sale that can be reversed"),
    "quarantine_reversed": ErrorSpec(
        "该笔待审核消费已在终端冲正", "this held sale was reversed at its terminal"
    ),
    "operator_unknown": ErrorSpec("不是本食堂的操作员卡", "not an operator card of this canteen", 403),
    "operator_pin_wrong": ErrorSpec("操作员密码错误", "wrong operator PIN", 403),
    "operator_pin_locked": ErrorSpec(
        "操作员密码错误次数过多，今日已锁定", "too many wrong operator PINs today: locked until tomorrow", 423
    ),
    "operator_pin_invalid": ErrorSpec("操作员密码须为6位数字", "an operator PIN is exactly 6 digits"),
    "operator_pin_too_simple": ErrorSpec(
        "操作员密码过于简单（不能全部相同或连续）", "operator PIN too simple (all digits the same, or a run)"
    ),
    "operator_cancelled": ErrorSpec("已取消", "cancelled by the operator"),
    # operations (issue 15): enrolment with one-time codes, key rotation, fleet alerts
    "enrolment_code_invalid": ErrorSpec("注册码错误", "wrong enrolment code", 403),
    "enrolment_code_used": ErrorSpec("注册码已使用过", "this enrolment code was already used", 403),
    "enrolment_code_expired": ErrorSpec(
        "注册码已过期，请重新申请", "this enrolment code has expired; ask for a new one", 403
    ),
    "enrolment_code_cancelled": ErrorSpec("注册码已作废", "this enrolment code was cancelled", 403),
    "enrolment_rate_limited": ErrorSpec(
        "注册码错误次数过多，请稍后再试", "too many wrong enrolment codes; try again later", 429
    ),
    "insecure_url": ErrorSpec(
        "必须使用 HTTPS 地址", "an https:// address is required (plain http only on this machine)"
    ),
    "config_exists": ErrorSpec("配置文件已存在", "the configuration file already exists", 409),
    "server_unreachable": ErrorSpec("无法连接服务器", "the server cannot be reached", 503),
    "rekey_unreadable": ErrorSpec("新密钥无法解开", "the offered key cannot be opened with this key"),
    "rotation_pending": ErrorSpec(
        "该终端的密钥更换尚未完成", "a key rotation of this terminal is still under way", 409
    ),
    "terminal_offline": ErrorSpec("终端离线", "terminal offline"),
    "unsent_sales_old": ErrorSpec(
        "终端有超过一小时未上传的交易", "terminal holds sales unsent for over an hour"
    ),
    "clock_offset_high": ErrorSpec("终端时钟偏差过大", "terminal clock offset beyond the limit"),
    "disk_nearly_full": ErrorSpec("终端磁盘将满", "terminal disk nearly full"),
    "software_outdated": ErrorSpec("终端软件版本过旧", "terminal runs an old software version"),
    # the web console's money pages (issue 14): a close confirms exactly what was previewed
    "preview_outdated": ErrorSpec(
        "预览之后数据已有变化，请重新核对预览后再确认",
        "the figures changed after the preview; review the new preview and confirm again",
        409,
    ),
    # the web console's imports: preview, then confirm exactly what was previewed (issue 14)
    "upload_expired": ErrorSpec(
        "上传的文件已失效（已导入、已被新上传的文件替代或超过一天），请重新上传",
        "the uploaded file is gone (imported, replaced by a newer upload, or a day old): upload it again",
        410,
    ),
    "import_changed": ErrorSpec(
        "预览之后数据已有变化，未导入任何数据；请核对新的预览后再确认",
        "the data changed since the preview: nothing was imported; check the new preview and confirm again",
        409,
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
    "bad_ingest_config": ErrorSpec(
        "接收进程配置错误（MQTT_INGEST_PARTITION / MQTT_BROKER_KIND）",
        "bad ingest worker setting (MQTT_INGEST_PARTITION / MQTT_BROKER_KIND)",
    ),
    "share_group_unsupported": ErrorSpec(
        "该消息代理不支持共享订阅，请按终端分区（MQTT_INGEST_PARTITION）",
        "the broker does not deliver to shared subscriptions: partition terminals "
        "(MQTT_INGEST_PARTITION) instead",
    ),
    "backup_sqlite_only": ErrorSpec(
        "此命令只备份 SQLite 数据库；PostgreSQL 请用 pg_basebackup 与 WAL 归档（见 docs/scaling.md）",
        "this command backs up the SQLite database only; back PostgreSQL up with pg_basebackup "
        "and WAL archiving (docs/scaling.md)",
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
