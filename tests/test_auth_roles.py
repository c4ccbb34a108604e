"""Tokens, roles and scopes: who a token speaks for, and what each scope may touch."""

from __future__ import annotations

import sqlite3

import pytest

from server.infra.auth import Principal, create_token, principal_for_token, revoke_token
from server.infra.db import connect, migrate, write_txn
from server.infra.schema import MIGRATIONS
from server.infra.scope import may_access_canteen, may_access_holder, may_access_operator, may_access_unit
from shared.errors import DomainError
from tests.helpers import populated


def test_a_diner_token_speaks_for_one_cardholder(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with write_txn(conn):
        token = create_token(conn, "diner", clock.now_ms(), holder_id="H00001")
    who = principal_for_token(conn, token, clock.now_ms())
    assert who == Principal("diner", holder_id="H00001")


@pytest.mark.parametrize(
    ("role", "missing"), [("clerk", "a unit"), ("operator", "an operator"), ("diner", "a cardholder")]
)
def test_a_scoped_role_needs_its_scope(conn: sqlite3.Connection, clock, role: str, missing: str) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(conn):
        create_token(conn, role, clock.now_ms())
    assert err.value.code == "invalid_input"
    assert missing in err.value.detail


def test_a_token_for_an_unknown_holder_is_refused(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(conn):
        create_token(conn, "diner", clock.now_ms(), holder_id="NOBODY")
    assert err.value.code == "not_found"


def test_an_unscoped_role_ignores_scope_arguments(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with write_txn(conn):
        token = create_token(conn, "auditor", clock.now_ms(), unit_id="U01", holder_id="H00001")
    assert principal_for_token(conn, token, clock.now_ms()) == Principal("auditor")


def test_a_revoked_token_no_longer_works(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    with write_txn(conn):
        token = create_token(conn, "admin", clock.now_ms())
        assert revoke_token(conn, token, clock.now_ms())
        assert not revoke_token(conn, token, clock.now_ms())
    with pytest.raises(DomainError) as err:
        principal_for_token(conn, token, clock.now_ms())
    assert (err.value.code, err.value.http_status) == ("token_revoked", 401)


@pytest.mark.sqlite_only("an old SQLite file upgraded in place (no PostgreSQL database predates the port)")
def test_tokens_issued_before_the_diner_role_survive_the_migration(tmp_path, clock) -> None:  # noqa: ANN001
    conn = connect(tmp_path / "old.sqlite")
    for number, sql in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO units(id, name) VALUES ('U01', '市财政局')")
    conn.execute(
        "INSERT INTO tokens(token_hash, role, unit_id, label, created_at_ms) "
        "VALUES ('abc', 'clerk', 'U01', 'old clerk', 1)"
    )
    migrate(conn)
    row = conn.execute("SELECT role, unit_id, holder_id, label FROM tokens").fetchone()
    assert tuple(row) == ("clerk", "U01", None, "old clerk")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO tokens(token_hash, role, created_at_ms) VALUES ('x', 'diner', 1)")


ADMIN, AUDITOR = Principal("admin"), Principal("auditor")
CLERK_U01 = Principal("clerk", unit_id="U01")
OPERATOR_XW = Principal("operator", operator="湘味餐饮有限公司")
DINER_H1 = Principal("diner", holder_id="H00001")


def test_a_clerk_reaches_only_their_own_unit() -> None:
    assert may_access_unit(CLERK_U01, "U01")
    assert not may_access_unit(CLERK_U01, "U02")
    assert may_access_holder(CLERK_U01, "H00009", "U01")
    assert not may_access_holder(CLERK_U01, "H00002", "U02")


def test_admin_and_auditor_reach_every_unit() -> None:
    for who in (ADMIN, AUDITOR):
        assert may_access_unit(who, "U02")
        assert may_access_holder(who, "H00002", "U02")
        assert may_access_canteen(who, "U02", "someone")
        assert may_access_operator(who, "someone")


def test_an_operator_reaches_only_the_canteens_they_run() -> None:
    assert may_access_canteen(OPERATOR_XW, "U01", "湘味餐饮有限公司")
    assert not may_access_canteen(OPERATOR_XW, "U02", "市教育局机关服务中心")
    assert not may_access_canteen(Principal("operator", operator=""), "U09", "")
    assert not may_access_unit(OPERATOR_XW, "U01")
    assert not may_access_holder(OPERATOR_XW, "H00001", "U01")


def test_a_diner_reaches_only_themselves() -> None:
    assert may_access_holder(DINER_H1, "H00001", "U01")
    assert not may_access_holder(DINER_H1, "H00004", "U01")
    assert not may_access_unit(DINER_H1, "U01")
    assert not may_access_canteen(DINER_H1, "U01", "湘味餐饮有限公司")


def test_every_api_route_declares_who_may_call_it(client) -> None:  # noqa: ANN001
    spec = client.get("/openapi.json").get_json()
    undeclared = [
        f"{method.upper()} {path}"
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if not op.get("x-roles") and not op.get("x-public") and op.get("security") != [{"terminal": []}]
    ]
    assert undeclared == []


def test_unknown_role_is_refused(conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(conn):
        create_token(conn, "superuser", clock.now_ms())
    assert err.value.code == "invalid_input"
