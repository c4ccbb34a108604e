"""HTTP JSON API: one blueprint per resource, all under ``/api/v1``.

Views are thin: they parse the request, call a service function inside a transaction and
return JSON. :func:`register` attaches the blueprints and turns every
:class:`~shared.errors.DomainError` (and every HTTP error) into :func:`error_body` with its
HTTP status, so every refusal has a stable code::

    {"code": "not_found", "message": "记录不存在", "message_zh": "记录不存在",
     "message_en": "not found", "detail": "unit U99"}

``message`` is in the deployment's language — ``LANGUAGE`` (``CANTEEN_LANGUAGE``), ``zh`` by
default, ``en`` — unless the request's ``Accept-Language`` asks for zh or en; ``message_zh``
and ``message_en`` are always both there; ``detail`` (what exactly was wrong) is English.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from server.api import (
    canteens,
    cards,
    ecny,
    faces,
    fleet,
    funds,
    health,
    holders,
    operators,
    qr,
    quality,
    quarantine,
    reports,
    settlements,
    terminals,
    tokens,
    units,
)
from shared.errors import DomainError, message

LANGUAGES = ("zh", "en")


def error_body(code: str, detail: str, lang: str) -> dict[str, Any]:
    """The JSON of a refusal: its stable code, the text in ``lang`` and in both languages."""
    return {
        "code": code,
        "message": message(code, lang),
        "message_zh": message(code, "zh"),
        "message_en": message(code, "en"),
        "detail": detail,
    }


def _language() -> str:
    """The language of this response's ``message``: Accept-Language if it names zh or en,
    else the deployment's ``LANGUAGE``."""
    asked = request.accept_languages.best_match(LANGUAGES) if request.accept_languages else None
    return asked or current_app.config.get("LANGUAGE", "zh")


def register(app: Flask) -> None:
    if app.config.get("LANGUAGE", "zh") not in LANGUAGES:
        raise DomainError(
            "config_invalid", f"LANGUAGE (CANTEEN_LANGUAGE) must be zh or en, not {app.config['LANGUAGE']!r}"
        )
    app.register_blueprint(health.bp)
    app.register_blueprint(health.meta)
    app.register_blueprint(terminals.bp)
    app.register_blueprint(fleet.bp)
    app.register_blueprint(fleet.metrics_bp)
    app.register_blueprint(units.bp)
    app.register_blueprint(canteens.bp)
    app.register_blueprint(canteens.directory_bp)
    app.register_blueprint(holders.bp)
    app.register_blueprint(cards.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(faces.bp)
    app.register_blueprint(qr.bp)
    app.register_blueprint(qr.page)
    app.register_blueprint(ecny.bp)
    app.register_blueprint(quarantine.bp)
    for money_bp in (funds.bp, settlements.bp, quality.bp, operators.bp, reports.bp):
        app.register_blueprint(money_bp)

    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError):  # noqa: ANN202
        lang = _language()
        body = error_body(exc.code, exc.detail, lang)
        body.update({k: v for k, v in exc.context.items() if k not in body})  # e.g. an import's line errors
        if isinstance(body.get("errors"), list):  # an import's line errors speak the same languages
            body["errors"] = [
                {**e, **{k: v for k, v in error_body(e["code"], "", lang).items() if k.startswith("message")}}
                if isinstance(e, dict) and isinstance(e.get("code"), str)
                else e
                for e in body["errors"]
            ]
        return jsonify(body), exc.http_status

    app.register_error_handler(HTTPException, http_error)


def http_error(exc: HTTPException):  # noqa: ANN201
    """An HTTP error (404, 405, 500 …) as the API's JSON refusal."""
    status = exc.code or 500
    code = {404: "not_found", 405: "invalid_input", 401: "unauthenticated", 403: "forbidden"}.get(
        status, "internal_error" if status >= 500 else "invalid_input"
    )
    return jsonify(error_body(code, exc.description or exc.name, _language())), status
