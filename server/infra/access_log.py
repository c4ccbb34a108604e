"""The HTTP access log: one line per request on the ``canteen.http`` logger (INFO).

    GET /api/v1/units route=/api/v1/units status=200 ms=3.1 rid=5be1c0de7a3f4d21 role=admin token=3f9a1c0b7d2e

Each line has the method, the path without its query string, the route (the URL rule, ``-``
when none matched), the status, the duration in milliseconds, the request id, the caller's
role (``-`` when none was established) and who: ``token=`` the token's id — the first 12 hex digits of its
SHA-256, as stored in ``tokens.token_hash`` — or ``terminal=`` a signed terminal's id. The
token itself is never logged, nor a QR phone page's access code (masked ``***`` in the path:
it opens the page like a password). Unprintable characters in a path are escaped, so a
request cannot forge a log line. The time is the log record's. The same fields travel on the
record as attributes (``http_method``, ``http_path``, ``http_route``, ``http_status``,
``duration_ms``, ``request_id``, ``role``, ``token_id``, ``terminal_id``) for a structured
handler (``shared.log_setup``).

**Request id.** Each request gets one: the caller's ``X-Request-Id`` when it sent a sane one
(letters, digits, ``._:-``, at most 64), else 16 random hex digits. It goes back in the
response's ``X-Request-Id`` header, and :class:`RequestIdFilter` stamps it on every log
record made while the request is handled, whichever logger made it.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import Flask, Response, current_app, g, has_request_context, request

from server.infra.auth import public_id

log = logging.getLogger("canteen.http")

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SECRET_ARGS = frozenset({"access"})  # URL parts that grant access by themselves (the QR page's)
MAX_PATH = 300
_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def init_app(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_log)


def token_id(token: str) -> str:
    """The loggable id of a bearer token: its public id (:func:`server.infra.auth.public_id`)."""
    return public_id(token)


def _start() -> None:
    g.access_log_t0 = time.perf_counter()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)


class RequestIdFilter(logging.Filter):
    """Stamps the current request's id on a log record made while handling it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and has_request_context():
            record.request_id = g.get("request_id")
        return True


def _printable(text: str) -> str:
    text = text if len(text) <= MAX_PATH else text[:MAX_PATH] + "…"
    return "".join(c if c.isprintable() and c != " " else f"\\x{ord(c):02x}" for c in text)


def _path() -> str:
    rule, args = request.url_rule, request.view_args or {}
    if rule is None or not SECRET_ARGS & set(args):
        return _printable(request.path)
    return _printable(
        _ARG.sub(lambda m: "***" if m[1] in SECRET_ARGS else str(args.get(m[1], m[0])), rule.rule)
    )


def _log(response: Response) -> Response:
    t0 = g.get("access_log_t0")
    ms = round((time.perf_counter() - t0) * 1000, 1) if t0 is not None else 0.0
    who = g.get("principal")
    header = request.headers.get("Authorization", "")
    token = token_id(header[7:].strip()) if header.startswith("Bearer ") and header[7:].strip() else None
    terminal = getattr(who, "terminal_id", None)
    fields = {
        "http_method": request.method,
        "http_path": _path(),
        "http_route": request.url_rule.rule if request.url_rule is not None else "-",
        "http_status": response.status_code,
        "duration_ms": ms,
        "request_id": g.get("request_id") or "-",
        "role": getattr(who, "role", None) or "-",
        "token_id": token,
        "terminal_id": terminal,
    }
    ident = f" token={token}" if token else (f" terminal={_printable(terminal)}" if terminal else "")
    response.headers[REQUEST_ID_HEADER] = fields["request_id"]
    log.info(
        "%s %s route=%s status=%d ms=%.1f rid=%s role=%s%s",
        fields["http_method"],
        fields["http_path"],
        fields["http_route"],
        fields["http_status"],
        ms,
        fields["request_id"],
        fields["role"],
        ident,
        extra=fields,
    )
    metrics = current_app.extensions.get("canteen_metrics")
    if metrics is not None:  # the same request counted for Prometheus (server.infra.metrics)
        route = str(fields["http_route"])
        metrics.http.labels(route, request.method, str(response.status_code)).inc()
        metrics.http_latency.labels(route).observe(ms / 1000)
    return response
