"""API errors speak the deployment's language first: ``message`` in ``CANTEEN_LANGUAGE``
(zh by default, en) unless Accept-Language asks for zh or en, and ``message_zh`` and
``message_en`` always; ``code`` never changes. Every error body matches the error schema
that ``/openapi.json`` publishes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import jsonschema_rs  # schemathesis's validator
import pytest
from click.testing import CliRunner

from server.app import create_app
from server.cli import main as server_main
from server.infra.auth import create_token
from server.infra.db import open_db, write_txn
from shared.clock import SystemClock

FIXTURES = Path(__file__).parent / "fixtures" / "registry"


def _admin(app) -> dict[str, str]:  # noqa: ANN001
    conn = open_db(app.config["DATABASE"])
    try:
        with write_txn(conn):
            return {"Authorization": f"Bearer {create_token(conn, 'admin', SystemClock().now_ms())}"}
    finally:
        conn.close()


def _error_schema(client) -> dict:  # noqa: ANN001
    spec = client.get("/openapi.json").get_json()
    return spec["paths"]["/api/v1/units/{unit_id}"]["get"]["responses"]["default"]["content"][
        "application/json"
    ]["schema"]


@pytest.mark.parametrize(
    ("language", "accept", "expected"),
    [
        ("zh", None, "记录不存在"),
        ("en", None, "not found"),
        ("zh", "en", "not found"),
        ("en", "zh-CN,zh;q=0.9", "记录不存在"),
        ("en", "fr", "not found"),  # a language we do not speak: the deployment's
    ],
)
def test_message_is_in_the_deployments_language_unless_the_request_asks(
    tmp_path: Path, language: str, accept: str | None, expected: str
) -> None:
    app = create_app({"HOME": str(tmp_path), "TESTING": True, "LANGUAGE": language})
    client = app.test_client()
    headers = {**_admin(app), **({"Accept-Language": accept} if accept else {})}
    body = client.get("/api/v1/units/U99", headers=headers).get_json()
    assert body == {
        "code": "not_found",
        "message": expected,
        "message_zh": "记录不存在",
        "message_en": "not found",
        "detail": "unit U99",
    }
    jsonschema_rs.validate(_error_schema(client), body)


def test_canteen_language_comes_from_the_environment(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CANTEEN_HOME", str(tmp_path))
    monkeypatch.setenv("CANTEEN_LANGUAGE", "en")
    app = create_app()
    assert app.config["LANGUAGE"] == "en"
    body = app.test_client().get("/api/v1/units", headers={}).get_json()
    assert (body["code"], body["message"], body["message_zh"]) == (
        "unauthenticated",
        "missing or invalid token",
        "未登录或令牌无效",
    )


def test_an_unknown_language_is_refused_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        server_main, ["--home", str(tmp_path), "init"], env={"CANTEEN_LANGUAGE": "fr"}
    )
    assert result.exit_code == 2, result.output
    assert "config_invalid" in result.output
    assert "CANTEEN_LANGUAGE" in result.output and "'fr'" in result.output
    assert "Traceback" not in result.output


def test_http_errors_outside_the_views_speak_both_languages(client) -> None:  # noqa: ANN001
    schema = _error_schema(client)
    for method, path, status, code, zh in (
        ("get", "/api/v1/no-such-thing", 404, "not_found", "记录不存在"),
        ("delete", "/api/v1/directory", 405, "invalid_input", "输入有误"),
    ):
        resp = client.open(path, method=method.upper())
        body = resp.get_json()
        assert (resp.status_code, body["code"], body["message"]) == (status, code, zh), body
        assert body["message_en"] and body["detail"]
        jsonschema_rs.validate(schema, body)


def test_an_imports_line_errors_speak_both_languages(client, conn: sqlite3.Connection, clock) -> None:  # noqa: ANN001
    with write_txn(conn):
        token = create_token(conn, "admin", clock.now_ms())
    resp = client.post(
        "/api/v1/canteens/import",
        data=(FIXTURES / "canteens_errors.csv").read_bytes(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    body = resp.get_json()
    assert (resp.status_code, body["code"], body["message"]) == (
        422,
        "import_rejected",
        "导入文件有误，未导入任何数据",
    )
    jsonschema_rs.validate(_error_schema(client), body)
    for e in body["errors"]:
        assert {"line", "column", "code", "detail", "message", "message_zh", "message_en"} <= set(e)
        assert e["message"] == e["message_zh"] != e["message_en"]


def test_the_readme_documents_the_error_languages() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for needle in ("CANTEEN_LANGUAGE", "message_zh", "message_en", "Accept-Language"):
        assert needle in readme, needle
