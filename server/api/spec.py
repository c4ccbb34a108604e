"""The OpenAPI document, generated from the routes themselves.

Every view carries its documentation next to it with :func:`doc` (summary, request and
response schemas, query parameters); :func:`~server.infra.auth.requires` records which roles may
call it (``x-roles``), :func:`~server.infra.auth.public` that anyone may (``x-public``).
:func:`build_openapi` walks Flask's URL map, so the document can never list a
route that does not exist — and ``tests/test_openapi.py`` fails when a route exists
without ``@doc``, so it can never silently miss one either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

F = TypeVar("F", bound=Callable[..., Any])

ERROR_SCHEMA = {
    "type": "object",
    "description": "A refusal (server.api.error_body): message in the deployment's language "
    "(CANTEEN_LANGUAGE, zh by default) or the one Accept-Language asks for; both texts always.",
    "required": ["code", "message", "message_zh", "message_en", "detail"],
    "properties": {
        "code": {"type": "string", "description": "stable machine code (shared/errors.py)"},
        "message": {"type": "string"},
        "message_zh": {"type": "string"},
        "message_en": {"type": "string"},
        "detail": {"type": "string", "description": "what exactly was wrong (English)"},
    },
}


def doc(
    summary: str,
    *,
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    query: dict[str, dict[str, Any]] | None = None,
    status: int = 200,
    content_type: str = "application/json",
    request_type: str = "application/json",
) -> Callable[[F], F]:
    """Attach OpenAPI documentation to a view (put it above ``@bp.get``/``@requires``).
    ``request_type``: the body's media type (``text/csv`` for file imports)."""

    def wrap(view: F) -> F:
        view._openapi = {  # type: ignore[attr-defined]
            "summary": summary,
            "request": request,
            "request_type": request_type,
            "response": response or {"type": "object"},
            "query": query or {},
            "status": status,
            "content_type": content_type,
        }
        return view

    return wrap


def _path(rule: str) -> tuple[str, list[str]]:
    names = re.findall(r"<(?:[a-z_]+:)?([a-zA-Z_]+)>", rule)
    return re.sub(r"<(?:[a-z_]+:)?([a-zA-Z_]+)>", r"{\1}", rule), names


def undocumented(app: Flask) -> list[str]:
    """API routes without ``@doc`` (the test keeps this empty)."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and not hasattr(app.view_functions[rule.endpoint], "_openapi"):
            out.append(f"{sorted(rule.methods - {'HEAD', 'OPTIONS'})} {rule.rule}")
    return out


def build_openapi(app: Flask) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/"):
            continue
        view = app.view_functions[rule.endpoint]
        meta = getattr(view, "_openapi", None) or {
            "summary": "(undocumented)",
            "response": {},
            "query": {},
            "status": 200,
            "request": None,
            "content_type": "application/json",
        }
        roles = getattr(view, "_roles", None)
        path, names = _path(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": meta["summary"],
                "parameters": [
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
                ]
                + [
                    {
                        "name": n,
                        "in": "query",
                        "required": bool(s.get("x-required", False)),
                        "schema": {k: v for k, v in s.items() if k != "x-required"},
                    }
                    for n, s in meta["query"].items()
                ],
                "responses": {
                    str(meta["status"]): {
                        "description": "OK",
                        "content": {meta["content_type"]: {"schema": meta["response"]}},
                    },
                    "default": {
                        "description": "error",
                        "content": {"application/json": {"schema": ERROR_SCHEMA}},
                    },
                },
            }
            if meta["request"] is not None:
                media = meta.get("request_type", "application/json")
                op["requestBody"] = {"required": True, "content": {media: {"schema": meta["request"]}}}
            if roles is not None:
                op["security"] = [{"bearer": []}]
                op["x-roles"] = list(roles)
            elif getattr(view, "_terminal_auth", False):
                op["security"] = [{"terminal": []}]
            elif getattr(view, "_public", False):
                op["security"] = []
                op["x-public"] = True
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "Canteen one-card server (食堂一卡通)", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "terminal": {"type": "apiKey", "in": "header", "name": "X-Terminal-Sig"},
            }
        },
    }
