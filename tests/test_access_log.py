"""Every HTTP request leaves one line on the ``canteen.http`` logger — method, path without
the query string, route, status, duration, the caller's role and token id — and no log line
ever holds a token or a QR page's access code."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path

import pytest

from server.infra.auth import create_token, terminal_request_signature
from server.infra.db import write_txn
from tests.helpers import populated, terminal


@pytest.fixture
def admin(conn: sqlite3.Connection, clock) -> str:  # noqa: ANN001
    populated(conn, clock.now_ms())
    with write_txn(conn):
        return create_token(conn, "admin", clock.now_ms())


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "canteen.http"]


def test_a_request_is_one_line_with_its_fields_and_never_the_token(client, admin, caplog) -> None:  # noqa: ANN001
    caplog.set_level(logging.DEBUG)  # everything any logger says, not only the access log
    resp = client.get("/api/v1/units/U01?fields=name&x=1", headers={"Authorization": f"Bearer {admin}"})
    assert resp.status_code == 200
    (record,) = _lines(caplog)
    token_id = "tok" + hashlib.sha256(admin.encode()).hexdigest()[:12]  # its public id
    assert record.levelno == logging.INFO and record.created > 0
    text = record.getMessage()
    assert text.startswith("GET /api/v1/units/U01 route=/api/v1/units/<unit_id> status=200 ms=")
    assert text.endswith(f" role=admin token={token_id}")
    assert (record.http_method, record.http_path, record.http_route, record.http_status) == (
        "GET",
        "/api/v1/units/U01",
        "/api/v1/units/<unit_id>",
        200,
    )
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0
    assert (record.role, record.token_id) == ("admin", token_id)
    assert "fields=name" not in text
    assert admin not in caplog.text and all(admin not in repr(r.__dict__) for r in caplog.records)


def test_refusals_and_unknown_routes_are_logged_too(client, admin, caplog) -> None:  # noqa: ANN001
    caplog.set_level(logging.INFO, logger="canteen.http")
    client.get("/api/v1/units/NOPE", headers={"Authorization": f"Bearer {admin}"})
    client.get("/api/v1/units", headers={"Authorization": "Bearer a-made-up-token"})
    client.get("/no/such/page%0Afake line")
    client.get("/api/v1/directory")
    lines = [r.getMessage() for r in _lines(caplog)]
    assert len(lines) == 4
    admin_id = "tok" + hashlib.sha256(admin.encode()).hexdigest()[:12]
    assert " status=404 " in lines[0] and lines[0].endswith(f"role=admin token={admin_id}")
    assert " status=401 " in lines[1] and " role=- token=" in lines[1] and "a-made-up-token" not in lines[1]
    assert lines[2].startswith("GET /no/such/page\\x0afake\\x20line route=- status=404 ")
    assert "\n" not in lines[2]
    assert lines[3].startswith("GET /api/v1/directory route=/api/v1/directory status=200 ")
    assert lines[3].endswith(" role=-")


def test_the_qr_page_access_code_is_masked(client, conn, clock, admin, caplog) -> None:  # noqa: ANN001
    card = conn.execute("SELECT card_id FROM cards LIMIT 1").fetchone()[0]
    issued = client.post(
        "/api/v1/qr/credentials", json={"card_id": card}, headers={"Authorization": f"Bearer {admin}"}
    )
    page_path = issued.get_json()["page_path"]
    access = page_path.rsplit("/", 1)[1]
    caplog.set_level(logging.DEBUG)
    assert client.get(page_path).status_code == 200
    assert client.get(page_path.replace("/qr/", "/api/v1/qr/code/")).status_code == 200
    records = _lines(caplog)
    assert len(records) == 2
    assert records[0].http_path == page_path.replace(access, "***") and records[0].http_status == 200
    assert access not in caplog.text


def test_a_terminal_request_names_the_terminal(client, conn, clock, caplog) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    creds = terminal(conn, "C01", clock.now_ms())
    path = f"/api/v1/terminals/{creds.terminal_id}/snapshot"
    at = clock.now_ms()
    nonce = "ab" * 16
    secret = bytes.fromhex(creds.secret_hex)
    sig = terminal_request_signature(secret, creds.terminal_id, at, nonce, "GET", path)
    caplog.set_level(logging.DEBUG)
    headers = {"X-Terminal-Id": creds.terminal_id, "X-Terminal-Time": str(at), "X-Terminal-Nonce": nonce}
    assert client.get(path, headers={**headers, "X-Terminal-Sig": sig}).status_code == 200
    client.get(path, headers=headers)  # unsigned: refused, nobody established
    signed, unsigned = _lines(caplog)
    assert (signed.role, signed.terminal_id, signed.token_id) == ("terminal", creds.terminal_id, None)
    assert signed.getMessage().endswith(f" role=terminal terminal={creds.terminal_id}")
    assert (unsigned.http_status, unsigned.role, unsigned.terminal_id) == (401, "-", None)
    assert sig not in caplog.text and creds.secret_hex not in caplog.text


def test_the_readme_documents_the_access_log() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "`canteen.http`" in readme and "never the token" in readme
