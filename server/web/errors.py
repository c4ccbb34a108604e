"""The console's error pages: 403, 404, 500 and every refusal, in Chinese, without internals.

A refusal raised in a page view (a :class:`~shared.errors.DomainError`) becomes a page with its
Chinese text and HTTP status; ``unauthenticated`` and ``session_expired`` send the browser to
the log-in page instead. Nothing of an exception's detail (English, internal) is shown.
"""

from __future__ import annotations

import logging

from flask import Response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from server.web.guard import to_login
from shared.errors import DomainError, message

log = logging.getLogger("canteen.web")

TITLES = {
    400: "请求有误",
    401: "请先登录",
    403: "无权访问",
    404: "页面不存在",
    405: "不支持此操作",
    409: "操作未执行",
    413: "内容过大",
    423: "账户已锁定",
    500: "系统内部错误",
}
EXPLAIN = {
    403: "您的账户无权查看或修改此内容。如需办理，请联系管理员。",
    404: "您要找的页面或记录不存在，可能已被删除或地址有误。",
    405: "此页面不支持这种操作。",
    500: "系统暂时无法完成您的请求，请稍后重试。如果问题持续，请联系管理员。",
}


def error_page(status: int, text: str = "") -> tuple[str, int]:
    title = TITLES.get(status, TITLES[400] if status < 500 else TITLES[500])
    body = text or EXPLAIN.get(status) or message("invalid_input")
    return render_template("web/error.html", status=status, title=title, text=body), status


def domain_error(exc: DomainError) -> Response | tuple[str, int]:
    if exc.code in ("unauthenticated", "session_expired"):
        return to_login(expired=exc.code == "session_expired")
    status = exc.http_status
    if exc.code == "forbidden":
        log.info("web: %s refused %s: %s", request.path, exc.code, exc.detail)
        return error_page(403)
    if status == 404:
        return error_page(404, EXPLAIN[404])
    zh = exc.context.get("zh")
    return error_page(status, message(exc.code) + (f"：{zh}" if zh else ""))


def http_error(exc: HTTPException) -> tuple[str, int]:
    if isinstance(exc, CSRFError):
        return error_page(400, message("form_expired"))
    status = exc.code or 500
    return error_page(status, EXPLAIN.get(status, ""))


def server_error(exc: InternalServerError) -> tuple[str, int]:
    # Flask has logged the original exception with its traceback; the person sees none of it
    return error_page(500)
