"""Operations: enrolment codes (issue and redeem), the fleet's health and alerts, a
terminal's key rotation, and ``/metrics`` for Prometheus.

* ``POST /api/v1/enrolments`` (admin) issues a one-time enrolment code for a canteen.
* ``POST /api/v1/enrol`` (no token: the code is the credential) redeems a code and returns
  the terminal's configuration with its secret, once. Every refusal is logged at WARNING
  (``enrolment_refused: <code> …``) with the caller's address; wrong codes are rate-limited
  per address (:mod:`server.registry.enrolment`).
* ``GET /api/v1/fleet`` (admin, auditor): every terminal's health and the active alerts.
* ``POST /api/v1/terminals/<id>/rotate`` (admin) starts a key rotation;
  ``GET /api/v1/terminals/<id>/rekey`` (terminal-signed) returns the sealed next key, if any.
* ``GET /metrics`` (admin, auditor: a bearer token in Prometheus' ``authorization``).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from server.api.params import json_body
from server.api.spec import doc
from server.api.terminal_common import own_terminal, with_release_key
from server.infra.auth import public, requires, requires_terminal
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.registry import broker_users, enrolment, rotation
from server.registry.fleet import limits_from_config, report
from shared.errors import DomainError
from shared.metrics import CONTENT_TYPE, exposition
from shared.protocol import seal_server

log = logging.getLogger(__name__)

bp = Blueprint("fleet", __name__, url_prefix="/api/v1")
metrics_bp = Blueprint("metrics", __name__)

ENROLMENT = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "shown once: 7KQM-2XPA-9D4T-HW3R"},
        "terminal_id": {"type": "string"},
        "canteen_id": {"type": "string"},
        "expires_at_ms": {"type": "integer"},
    },
}


@bp.post("/enrolments")
@doc(
    "Issue a one-time enrolment code for a new terminal of a canteen (valid 24 h; shown once)",
    request={
        "type": "object",
        "required": ["canteen_id", "broker_url"],
        "properties": {
            "canteen_id": {"type": "string"},
            "terminal_id": {"type": "string"},
            "broker_url": {"type": "string"},
            "server_url": {"type": "string"},
        },
    },
    response=ENROLMENT,
    status=201,
)
@requires("admin")
def issue():  # noqa: ANN201
    body = json_body()
    canteen_id, broker_url = body.get("canteen_id"), body.get("broker_url")
    terminal_id, server_url = body.get("terminal_id"), body.get("server_url", "")
    if not isinstance(canteen_id, str) or not isinstance(broker_url, str) or not broker_url:
        raise DomainError("invalid_input", "canteen_id and broker_url required")
    if terminal_id is not None and not isinstance(terminal_id, str):
        raise DomainError("invalid_input", "terminal_id: a string")
    if not isinstance(server_url, str):
        raise DomainError("invalid_input", "server_url: a string")
    conn = get_db()
    with write_txn(conn):
        issued = enrolment.issue(
            conn,
            canteen_id,
            get_clock().now_ms(),
            broker_url=broker_url,
            server_url=server_url,
            terminal_id=terminal_id,
        )
    return jsonify(issued.to_json()), 201


CONFIG = {
    "type": "object",
    "properties": {
        "terminal_id": {"type": "string"},
        "canteen_id": {"type": "string"},
        "secret_hex": {"type": "string"},
        "server_public_key": {"type": "string"},
        "broker_url": {"type": "string"},
        "server_url": {"type": "string"},
        "release_public_key": {"type": "string"},
    },
}


@bp.post("/enrol")
@doc(
    "Redeem a one-time enrolment code: the new terminal's configuration, with its secret "
    "(once). Refused: enrolment_code_invalid, _used, _expired, _cancelled, enrolment_rate_limited",
    request={"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}},
    response=CONFIG,
)
@public
def enrol():  # noqa: ANN201
    body = json_body()
    typed = body.get("code")
    if not isinstance(typed, str) or len(typed) > 64:
        raise DomainError("invalid_input", "code: the enrolment code as a string")
    remote = request.remote_addr or "?"
    key = current_app.extensions["canteen_server_key"]
    wrong = current_app.extensions.setdefault("canteen_wrong_codes", enrolment.WrongCodes())
    conn = get_db()
    with write_txn(conn):
        outcome = enrolment.redeem(conn, typed, remote, get_clock().now_ms(), key.public_hex, wrong)
    if outcome.refusal is not None:
        log.warning(
            "enrolment_refused: %s terminal=%s from=%s (%s)",
            outcome.refusal,
            outcome.terminal_id or "-",
            remote,
            outcome.detail,
        )
        raise DomainError(outcome.refusal, outcome.detail)
    creds = outcome.credentials
    assert creds is not None
    told = broker_users.apply(conn, current_app.config)  # the broker learns the new user
    log.info(
        "terminal %s enrolled for canteen %s from %s%s",
        creds.terminal_id,
        creds.canteen_id,
        remote,
        "" if told else f"; {broker_users.RELOAD_HINT}",
    )
    config = {
        **creds.to_json(),
        "broker_url": outcome.broker_url,
        "server_url": outcome.server_url,  # "": the address the terminal enrolled through
    }
    response = jsonify(with_release_key(config))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/fleet")
@doc(
    "Every terminal's health (state and since when, last heartbeat, unsent sales and the "
    "oldest, clock offset, software, disk, journal, last error) and the active alerts",
    response={
        "type": "object",
        "properties": {
            "now_ms": {"type": "integer"},
            "online": {"type": "integer"},
            "terminals": {"type": "array", "items": {"type": "object"}},
            "alerts": {"type": "array", "items": {"type": "object"}},
        },
    },
)
@requires("admin", "auditor")
def fleet():  # noqa: ANN201
    return jsonify(report(get_db(), get_clock().now_ms(), limits_from_config(current_app.config)))


@bp.post("/terminals/<terminal_id>/rotate")
@doc(
    "Start rotating a terminal's key (HMAC secret and broker password): the terminal is "
    "offered the next key and switches to it; unsent sales are not lost",
    response={
        "type": "object",
        "properties": {
            "terminal_id": {"type": "string"},
            "current_key_id": {"type": "string"},
            "next_key_id": {"type": "string"},
        },
    },
)
@requires("admin")
def rotate(terminal_id: str):  # noqa: ANN201
    conn = get_db()
    with write_txn(conn):
        started = rotation.start(conn, terminal_id, get_clock().now_ms())
    return jsonify(
        {
            "terminal_id": started.terminal_id,
            "current_key_id": started.current_key_id,
            "next_key_id": started.next_key_id,
        }
    )


@bp.get("/terminals/<terminal_id>/rekey")
@doc(
    "The terminal's next key, sealed under its current one, server-signed "
    "(terminal-signed request); 204 when none"
)
@requires_terminal
def rekey(terminal_id: str) -> Response:
    own_terminal(terminal_id, "a terminal may only fetch its own key")
    offer = rotation.offer(get_db(), terminal_id)
    if offer is None:
        return Response(status=204)
    key = current_app.extensions["canteen_server_key"]
    payload = seal_server("rekey", offer.to_body(), key, get_clock().now_ms())
    return Response(payload, mimetype="application/json", headers={"Cache-Control": "no-store"})


@metrics_bp.get("/metrics")
@requires("admin", "auditor")
def metrics() -> Response:
    """Prometheus metrics (text format): sales, ingest latency, acks, deltas, HTTP, terminals."""
    return Response(exposition(current_app.extensions["canteen_metrics"].registry), mimetype=CONTENT_TYPE)
