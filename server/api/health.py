"""``GET /api/v1/health``: is the server up, what delta version is it at, and its time
(terminals measure their clock offset against ``now_ms``)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from server.api.spec import build_openapi, doc
from server.downstream.deltas import current_version
from server.infra.auth import public
from server.infra.db_flask import get_clock, get_db

bp = Blueprint("health", __name__, url_prefix="/api/v1")


meta = Blueprint("meta", __name__)


@bp.get("/health")
@doc(
    "Is the server up, at which delta version, and the server's time (epoch ms)",
    response={
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "delta_version": {"type": "integer"},
            "now_ms": {"type": "integer"},
        },
    },
)
@public
def health():  # noqa: ANN201
    return jsonify({"ok": True, "delta_version": current_version(get_db()), "now_ms": get_clock().now_ms()})


@meta.get("/openapi.json")
def openapi():  # noqa: ANN201
    """The OpenAPI 3 document of every /api route, generated from the routes."""
    return jsonify(build_openapi(current_app))
