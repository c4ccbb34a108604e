"""``GET /api/v1/health``: is the server up, and what delta version is it at."""

from __future__ import annotations

from flask import Blueprint, jsonify

from server.db_flask import get_db
from server.downstream import current_version

bp = Blueprint("health", __name__, url_prefix="/api/v1")


@bp.get("/health")
def health():  # noqa: ANN201
    return jsonify({"ok": True, "delta_version": current_version(get_db())})
