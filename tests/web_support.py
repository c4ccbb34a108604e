"""Helpers for tests of the web console: accounts of every role, log-in with the form's CSRF
token, posting a form as a browser would (Flask test client; the browser journeys use
Playwright, tests/test_web_browser.py)."""

from __future__ import annotations

import re
import sqlite3

from server.infra.db import write_txn
from server.web import accounts

PASSWORD = "Kantine2026"  # passes the password rule
NEW_PASSWORD = "Neu2026Pass"
# a staff account of every role, each scoped like the API role tests' tokens
STAFF = {
    "admin": {},
    "auditor": {},
    "clerk": {"unit_id": "U01"},
    "operator": {"operator": "湘味餐饮有限公司"},
}
DINER_HOLDER = "H00001"  # in U01, 工号 U01-0001 (tests.helpers.populated)
DINER_STAFF_NO = "U01-0001"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m, "the page has no CSRF token"
    return m.group(1)


def make_staff(
    conn: sqlite3.Connection,
    role: str,
    now_ms: int,
    username: str | None = None,
    *,
    must_change: bool = False,
) -> str:
    """A staff account of ``role`` (scope from :data:`STAFF`) with :data:`PASSWORD`; its user name."""
    name = username or f"{role}1"
    with write_txn(conn):
        accounts.add_staff(conn, name, role, PASSWORD, now_ms, display_name=f"测试{role}", **STAFF[role])
        if not must_change:
            conn.execute("UPDATE web_accounts SET must_change = 0 WHERE login = ?", (name,))
    return name


def make_diner(conn: sqlite3.Connection, holder_id: str, staff_no: str, now_ms: int) -> None:
    """A diner account, activated with :data:`PASSWORD`."""
    with write_txn(conn):
        code = accounts.issue_activation(conn, holder_id, now_ms, "test").code
        result = accounts.activate(conn, staff_no, None, code, PASSWORD, now_ms)
    assert result.account is not None, result.refusal


def post_form(client, url: str, data: dict[str, str], page: str | None = None):  # noqa: ANN001, ANN201
    """Open ``page`` (default ``url``) for its CSRF token, then post ``data`` to ``url``."""
    token = csrf_of(client.get(page or url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def login(client, username: str, password: str = PASSWORD):  # noqa: ANN001, ANN201
    return post_form(client, "/login", {"username": username, "password": password})


def diner_login(client, staff_no: str = DINER_STAFF_NO, password: str = PASSWORD, unit_id: str = ""):  # noqa: ANN001, ANN201
    return post_form(client, "/diner/login", {"staff_no": staff_no, "unit_id": unit_id, "password": password})


def text_of(resp) -> str:  # noqa: ANN001
    return resp.get_data(as_text=True)
