"""Issue 11 at the HTTP edge: oversized bodies refused unread, security headers on every
response, tokens that expire and can be revoked, signed terminal requests that cannot be
replayed or have their query changed."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from flask import Flask

from server.cli.root import main as server_main
from server.infra.auth import (
    TERMINAL_CLOCK_TOLERANCE_MS,
    create_token,
    issue_token,
    terminal_request_signature,
)
from server.infra.body_limit import MAX_REQUEST_BYTES, http_server
from server.infra.db import write_txn
from server.registry import units
from shared.protocol import ServerVerifier
from terminal.server_http import ServerHttp
from tests.helpers import populated, terminal


@pytest.fixture
def admin(conn, clock) -> dict[str, str]:  # noqa: ANN001
    with write_txn(conn):
        return {"Authorization": f"Bearer {create_token(conn, 'admin', clock.now_ms())}"}


@pytest.fixture
def live(app: Flask) -> Iterator[int]:
    """The app behind a real waitress server on a free port, in a thread."""
    server = http_server(app, "127.0.0.1", 0, threads=2)

    def serve() -> None:
        try:
            server.run()
        except OSError:  # closing the listening socket ends waitress's loop this way
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.effective_port)
    server.close()
    thread.join(5)


def response_of(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def _length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 0


def test_a_300_mb_body_is_refused_from_its_headers_as_json_413(live: int, conn) -> None:  # noqa: ANN001
    declared = 300 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", live), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/roster/import HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            + f"Content-Length: {declared}\r\n\r\n".encode()
        )
        sock.sendall(b"0" * 65536)  # a little of the body; the rest is never sent
        status, headers, body = response_of(sock)
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    refusal = json.loads(body)
    assert refusal["code"] == "request_too_large"
    assert refusal["message"] == "请求内容过大，已拒绝" and refusal["message_en"] == "request body too large"


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(live: int) -> None:
    with socket.create_connection(("127.0.0.1", live), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/roster/import HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"0" * 65536 + b"\r\n"  # 64 KB chunks, without end
        sent = 0
        sock.settimeout(0.5)
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass
        sock.settimeout(30)
        status, _, body = response_of(sock)
    assert status == 413 and json.loads(body)["code"] == "request_too_large"
    assert sent < 64 * 1024 * 1024  # refused long before the client was done


def test_flask_refuses_an_oversized_body_as_json_and_changes_nothing(client, conn, admin) -> None:  # noqa: ANN001
    with write_txn(conn):
        units.add_unit(conn, "U01", "市财政局", 30_000)
    body = "单位名称,姓名,工号,卡号\n" + "市财政局,王伟,CZ001,04A1B2C3D4\n" * (MAX_REQUEST_BYTES // 30)
    resp = client.post("/api/v1/roster/import", data=body.encode(), content_type="text/csv", headers=admin)
    assert (resp.status_code, resp.get_json()["code"]) == (413, "request_too_large")
    assert conn.execute("SELECT count(*) FROM holders").fetchone()[0] == 0


def test_every_response_carries_the_security_headers(client) -> None:  # noqa: ANN001
    for path in ("/api/v1/health", "/api/v1/units", "/openapi.json", "/nowhere"):
        resp = client.get(path)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["Referrer-Policy"] == "no-referrer", path
        assert resp.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"], path


def test_the_qr_page_allows_only_its_own_nonced_style_and_no_script(client) -> None:  # noqa: ANN001
    resp = client.get("/qr/0123456789abcdef/" + "0" * 32)
    assert resp.mimetype == "text/html" and resp.status_code == 404
    csp = resp.headers["Content-Security-Policy"]
    nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
    page = resp.get_data(as_text=True)
    assert f'<style nonce="{nonce}">' in page and "<script" not in page and "style=" not in page
    assert "script-src" not in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert client.get("/qr/0123456789abcdef/" + "0" * 32).headers["Content-Security-Policy"] != csp


# --- tokens: expiry, revocation, listing without secrets ---------------------------------------


def test_a_token_expires_after_its_days_with_a_code(client, conn, clock) -> None:  # noqa: ANN001
    with write_txn(conn):
        issued = issue_token(conn, "auditor", clock.now_ms(), expires_days=1)
    auth = {"Authorization": f"Bearer {issued.token}"}
    assert client.get("/api/v1/me", headers=auth).status_code == 200
    clock.advance_ms(24 * 3600 * 1000)
    resp = client.get("/api/v1/me", headers=auth)
    assert (resp.status_code, resp.get_json()["code"]) == (401, "token_expired")


def test_staff_tokens_expire_by_default_after_90_days(conn, clock) -> None:  # noqa: ANN001
    with write_txn(conn):
        issued = issue_token(conn, "admin", clock.now_ms())
    assert issued.expires_at_ms == clock.now_ms() + 90 * 24 * 3600 * 1000


def test_an_admin_lists_tokens_without_secrets_and_revokes_one(client, conn, clock, admin) -> None:  # noqa: ANN001
    resp = client.post("/api/v1/tokens", json={"role": "auditor", "label": "审计 张三"}, headers=admin)
    assert resp.status_code == 201
    issued = resp.get_json()
    auditor = {"Authorization": f"Bearer {issued['token']}"}
    listing = client.get("/api/v1/tokens", headers=admin)
    assert listing.status_code == 200
    [entry] = [t for t in listing.get_json() if t["id"] == issued["id"]]
    assert entry["label"] == "审计 张三" and entry["expires_at_ms"] == issued["expires_at_ms"]
    assert issued["token"] not in listing.get_data(as_text=True) and "token_hash" not in entry
    assert client.get("/api/v1/tokens", headers=auditor).status_code == 403

    revoked = client.delete(f"/api/v1/tokens/{issued['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at_ms"] == clock.now_ms()
    resp = client.get("/api/v1/me", headers=auditor)
    assert (resp.status_code, resp.get_json()["code"]) == (401, "token_revoked")
    assert client.delete("/api/v1/tokens/tok-nope", headers=admin).status_code == 404


def test_an_unknown_expiry_is_refused_and_issues_nothing(client, conn, admin) -> None:  # noqa: ANN001
    before = conn.execute("SELECT count(*) FROM tokens").fetchone()[0]
    for days in (0, -1, "30", 1.5, True, 100_000):
        resp = client.post("/api/v1/tokens", json={"role": "auditor", "expires_days": days}, headers=admin)
        assert (resp.status_code, resp.get_json()["code"]) == (400, "invalid_input"), days
    assert conn.execute("SELECT count(*) FROM tokens").fetchone()[0] == before


def test_the_cli_lists_and_revokes_tokens_by_id(app, tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    made = runner.invoke(server_main, [*home, "create-token", "--role", "auditor", "--expires-days", "7"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    listed = runner.invoke(server_main, [*home, "token", "list", "--json"])
    [entry] = json.loads(listed.stdout)
    assert secret not in listed.output and entry["role"] == "auditor"
    assert entry["expires_at_ms"] - entry["created_at_ms"] == 7 * 24 * 3600 * 1000
    assert runner.invoke(server_main, [*home, "token", "revoke", entry["id"]]).exit_code == 0
    [after] = json.loads(runner.invoke(server_main, [*home, "token", "list", "--json"]).stdout)
    assert after["revoked_at_ms"] is not None
    unknown = runner.invoke(server_main, [*home, "token", "revoke", "tok-nope"])
    assert unknown.exit_code == 2 and "not_found" in unknown.stderr


# --- signed terminal requests: nonce, query string, no replay -----------------------------------


@pytest.fixture
def term(app: Flask, conn, clock):  # noqa: ANN001, ANN201
    populated(conn, clock.now_ms())
    return terminal(conn, "C01", clock.now_ms(), app.extensions["canteen_server_key"].public_hex)


def signed(creds, clock, path: str, query: str = "", nonce: str = "a" * 32) -> dict[str, str]:  # noqa: ANN001
    at = clock.now_ms()
    secret = bytes.fromhex(creds.secret_hex)
    return {
        "X-Terminal-Id": creds.terminal_id,
        "X-Terminal-Time": str(at),
        "X-Terminal-Nonce": nonce,
        "X-Terminal-Sig": terminal_request_signature(
            secret, creds.terminal_id, at, nonce, "GET", path, query
        ),
    }


def test_a_signed_terminal_request_cannot_be_replayed(client, term, clock) -> None:  # noqa: ANN001
    path = f"/api/v1/terminals/{term.terminal_id}/deltas"
    headers = signed(term, clock, path, "since=0")
    assert client.get(f"{path}?since=0", headers=headers).status_code == 200
    clock.advance_ms(60_000)  # a minute later, well inside the clock tolerance
    again = client.get(f"{path}?since=0", headers=headers)
    assert (again.status_code, again.get_json()["code"]) == (401, "request_replayed")


def test_the_query_string_is_signed(client, term, clock) -> None:  # noqa: ANN001
    path = f"/api/v1/terminals/{term.terminal_id}/deltas"
    headers = signed(term, clock, path, "since=5")
    changed = client.get(f"{path}?since=0", headers=headers)
    assert (changed.status_code, changed.get_json()["code"]) == (401, "bad_signature")


def test_a_request_without_a_nonce_is_refused(client, term, clock) -> None:  # noqa: ANN001
    path = f"/api/v1/terminals/{term.terminal_id}/snapshot"
    headers = signed(term, clock, path)
    del headers["X-Terminal-Nonce"]
    resp = client.get(path, headers=headers)
    assert (resp.status_code, resp.get_json()["code"]) == (401, "bad_signature")


def test_seen_nonces_are_forgotten_once_their_time_is_out_of_the_window(client, conn, term, clock) -> None:  # noqa: ANN001
    path = f"/api/v1/terminals/{term.terminal_id}/snapshot"
    assert client.get(path, headers=signed(term, clock, path, nonce="n" * 32)).status_code == 200
    clock.advance_ms(TERMINAL_CLOCK_TOLERANCE_MS + 1)
    assert client.get(path, headers=signed(term, clock, path, nonce="m" * 32)).status_code == 200
    assert [r[0] for r in conn.execute("SELECT nonce FROM terminal_nonces")] == ["m" * 32]


def test_the_terminal_fetches_its_snapshot_and_deltas_from_a_real_server(
    app: Flask, live: int, term, clock
) -> None:  # noqa: ANN001
    http = ServerHttp(
        f"http://127.0.0.1:{live}",
        term.terminal_id,
        bytes.fromhex(term.secret_hex),
        ServerVerifier(app.extensions["canteen_server_key"].public_hex),
    )
    snapshot = http.snapshot(clock.now_ms())
    assert snapshot.version >= 1
    assert http.deltas_since(0, clock.now_ms())  # twice at the same ms: a fresh nonce each time
    assert http.deltas_since(0, clock.now_ms())
