"""HTTP JSON API: one blueprint per resource, all under ``/api/v1``.

Views are thin: they parse the request, call a service function inside a transaction and
return JSON. :func:`register` attaches the blueprints and turns every
:class:`~shared.errors.DomainError` into ``{"code", "message", "detail"}`` with its HTTP
status, so every refusal has a stable code.
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from server.api import (
    canteens,
    cards,
    ecny,
    faces,
    funds,
    health,
    holders,
    operators,
    qr,
    quarantine,
    quality,
    reports,
    settlements,
    terminals,
    tokens,
    units,
)
from shared.errors import DomainError


def register(app: Flask) -> None:
    app.register_blueprint(health.bp)
    app.register_blueprint(health.meta)
    app.register_blueprint(terminals.bp)
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
        lang = "zh" if request.accept_languages.best_match(["en", "zh"]) == "zh" else "en"
        body = exc.to_json(lang)
        body.update({k: v for k, v in exc.context.items() if k not in body})  # e.g. an import's line errors
        return jsonify(body), exc.http_status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # noqa: ANN202
        status = exc.code or 500
        code = {404: "not_found", 405: "invalid_input", 401: "unauthenticated", 403: "forbidden"}.get(
            status, "internal_error" if status >= 500 else "invalid_input"
        )
        return jsonify({"code": code, "message": exc.name, "detail": exc.description or ""}), status
