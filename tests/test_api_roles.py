"""Every endpoint × every role, walked from the OpenAPI document.

The document lists each route's ``x-roles`` (from ``@requires``) or ``x-public``; this
test calls every route with a token of every role and with none, and asserts:

* no token → 401 ``unauthenticated`` (unless public);
* a role not in ``x-roles`` → 403 ``forbidden``;
* a role in ``x-roles`` → not refused (401/403) — the sample ids below are inside every
  scoped role's scope, so a scope refusal here would be a bug too.

It knows nothing about particular endpoints, so routes added later are covered as soon as
they exist. A new path parameter needs a sample value in ``SAMPLE``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from server.infra.auth import ROLES, create_token
from server.infra.db import write_txn
from tests.helpers import populated
from tests.roles_support import fill_params

# Sample path values, all inside the scope of the tokens made below.
SAMPLE = {
    "unit_id": "U01",
    "canteen_id": "C01",  # run by 湘味餐饮有限公司, hosted by U01
    "holder_id": "H00001",  # in U01; the diner token's holder
    "card_id": "C00001",  # H00001's card
    "sku": "tissue",
    "request_id": "1",
    "terminal_id": "T0001",
    "bundle": "terminal-0.2.0",  # an update bundle (none is offered: 404, not a refusal)
    "operator": "湘味餐饮有限公司",
    "quarter": "2026Q1",
    "year": "2026",
    "sale_id": "1",
    "seq": "1",  # a held sale (none exists: 404, not a refusal)
    "credential_id": "0123456789abcdef",  # a QR credential (none exists: 404, not a refusal)
    "access": "0" * 32,
    "token_id": "tok000000000000",  # no such token: 404, not a refusal
}
SCOPES = {
    "admin": {},
    "auditor": {},
    "clerk": {"unit_id": "U01"},
    "operator": {"operator": "湘味餐饮有限公司"},
    "diner": {"holder_id": "H00001"},
}
REFUSED = {401, 403}


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [
        (path, method, op)
        for path, ops in sorted(spec["paths"].items())
        for method, op in sorted(ops.items())
    ]


def fill(path: str) -> str:
    return fill_params(path, r"\{([a-zA-Z_]+)\}", SAMPLE)


@pytest.fixture
def tokens(conn: sqlite3.Connection, clock) -> dict[str, str]:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with write_txn(conn):
        return {role: create_token(conn, role, clock.now_ms(), **SCOPES[role]) for role in ROLES}


def call(client, method: str, url: str, token: str | None):  # noqa: ANN001, ANN201
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs = {"json": {}} if method in {"post", "put", "patch"} else {}
    return client.open(url, method=method.upper(), headers=headers, **kwargs)


def walk(
    client, tokens: dict[str, str], check: Callable[[str, str, dict, str | None, object], str | None]
) -> list[str]:  # noqa: ANN001
    spec = client.get("/openapi.json").get_json()
    problems = []
    for path, method, op in operations(spec):
        url = fill(path)
        for role in [*ROLES, None]:
            resp = call(client, method, url, tokens.get(role) if role else None)
            problem = check(method, path, op, role, resp)
            if problem:
                problems.append(f"{method.upper()} {path} as {role or 'nobody'}: {problem}")
    return problems


def test_every_endpoint_refuses_or_serves_every_role_as_its_roles_say(client, tokens) -> None:  # noqa: ANN001
    def check(method: str, path: str, op: dict, role: str | None, resp) -> str | None:  # noqa: ANN001
        body = resp.get_json(silent=True) or {}
        if op.get("security") == [{"terminal": []}]:
            return (
                None
                if resp.status_code == 401
                else f"terminal route answered {resp.status_code} to a bearer token"
            )
        if op.get("x-public"):
            return f"public route refused: {resp.status_code} {body}" if resp.status_code in REFUSED else None
        allowed = op["x-roles"]
        if role is None:
            ok = resp.status_code == 401 and body.get("code") == "unauthenticated"
            return None if ok else f"expected 401 unauthenticated, got {resp.status_code} {body.get('code')}"
        if role not in allowed:
            ok = resp.status_code == 403 and body.get("code") == "forbidden"
            return None if ok else f"expected 403 forbidden, got {resp.status_code} {body.get('code')}"
        if resp.status_code in REFUSED:
            return f"allowed role refused: {resp.status_code} {body}"
        if resp.status_code >= 500:
            return f"server error {resp.status_code}"
        return None

    assert walk(client, tokens, check) == []


def test_an_unknown_or_malformed_token_is_unauthenticated_everywhere(client, tokens) -> None:  # noqa: ANN001
    spec = client.get("/openapi.json").get_json()
    for path, method, op in operations(spec):
        if not op.get("x-roles"):
            continue
        for header in ("Bearer not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer "):
            resp = client.open(fill(path), method=method.upper(), headers={"Authorization": header})
            assert (resp.status_code, resp.get_json()["code"]) == (401, "unauthenticated"), (
                f"{method} {path} {header}"
            )


def test_errors_are_json_with_a_stable_code_and_a_message(client, tokens) -> None:  # noqa: ANN001
    resp = client.get("/api/v1/units/NOPE", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert resp.status_code == 404
    assert resp.get_json() == {
        "code": "not_found",
        "message": "记录不存在",  # a Chinese deployment speaks Chinese first (CANTEEN_LANGUAGE=zh)
        "message_zh": "记录不存在",
        "message_en": "not found",
        "detail": "unit NOPE",
    }
    en = client.get(
        "/api/v1/units/NOPE",
        headers={"Authorization": f"Bearer {tokens['admin']}", "Accept-Language": "en-US"},
    )
    assert en.get_json()["message"] == "not found" and en.get_json()["message_zh"] == "记录不存在"
