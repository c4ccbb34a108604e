"""``qr-issue`` hands a diner a link their phone can open: on the server's public address
(``--base-url``, else ``PUBLIC_URL`` from ``init --public-url``, config.py or
``CANTEEN_PUBLIC_URL``), never a localhost link by default — without one it refuses and
issues nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import main
from server.infra.db import open_db
from shared.clock import SystemClock
from tests.helpers import populated


def _home(tmp_path: Path, *init_args: str) -> tuple[Path, str]:
    """A server home with a populated database; returns it and a card id."""
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "init", *init_args], env=_NO_URL)
    assert result.exit_code == 0, result.output
    conn = open_db(str(tmp_path / "server" / "canteen.sqlite"))
    try:
        card = populated(conn, SystemClock().now_ms()).diners[0].card_id
    finally:
        conn.close()
    return tmp_path, card


_NO_URL = {"CANTEEN_PUBLIC_URL": None}


def _credentials(home: Path) -> int:
    conn = open_db(str(home / "server" / "canteen.sqlite"))
    try:
        return conn.execute("SELECT count(*) FROM qr_credentials").fetchone()[0]
    finally:
        conn.close()


def _issue(home: Path, card: str, *args: str, env: dict | None = None):  # noqa: ANN202
    return CliRunner().invoke(
        main, ["--home", str(home), "qr-issue", card, "--json", *args], env={**_NO_URL, **(env or {})}
    )


def test_without_a_public_address_qr_issue_refuses_and_issues_nothing(tmp_path: Path) -> None:
    home, card = _home(tmp_path)
    result = _issue(home, card)
    assert result.exit_code == 2, result.output
    assert "错误：未配置服务器对外地址（PUBLIC_URL）（public_url_missing）" in result.output
    assert "public address (PUBLIC_URL) is not configured" in result.output
    assert "--base-url" in result.output and "init --public-url" in result.output
    assert "127.0.0.1" not in result.output and "Traceback" not in result.output
    assert _credentials(home) == 0


def test_init_saves_the_public_address_and_qr_issue_links_to_it(tmp_path: Path) -> None:
    home, card = _home(tmp_path, "--public-url", "https://canteen.example.gov.cn/")
    assert "PUBLIC_URL = 'https://canteen.example.gov.cn'" in (home / "server" / "config.py").read_text()
    result = _issue(home, card)
    assert result.exit_code == 0, result.output
    url = json.loads(result.stdout)["page_url"]
    assert url.startswith("https://canteen.example.gov.cn/qr/")
    # init again with another address replaces it (one setting, not two)
    again = CliRunner().invoke(main, ["--home", str(home), "init", "--public-url", "http://10.0.0.5:8080"])
    assert again.exit_code == 0 and "对外地址 public URL: http://10.0.0.5:8080" in again.output
    settings = (home / "server" / "config.py").read_text().splitlines()
    assert [line for line in settings if line.startswith("PUBLIC_URL")] == [
        "PUBLIC_URL = 'http://10.0.0.5:8080'  # canteen-server init --public-url"
    ]
    assert json.loads(_issue(home, card).stdout)["page_url"].startswith("http://10.0.0.5:8080/qr/")


def test_the_environment_and_base_url_override(tmp_path: Path) -> None:
    home, card = _home(tmp_path, "--public-url", "https://a.example")
    env = {"CANTEEN_PUBLIC_URL": "https://b.example"}
    assert json.loads(_issue(home, card, env=env).stdout)["page_url"].startswith("https://b.example/qr/")
    given = _issue(home, card, "--base-url", "https://c.example", env=env)
    assert json.loads(given.stdout)["page_url"].startswith("https://c.example/qr/")


@pytest.mark.parametrize("url", ["canteen.example.gov.cn", "ftp://x.example", "https://", "https://x?a=1"])
def test_a_bad_public_address_is_refused_and_changes_nothing(tmp_path: Path, url: str) -> None:
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "init", "--public-url", url])
    assert result.exit_code == 2 and "invalid_input" in result.output and "http(s)://host" in result.output
    assert not (tmp_path / "server").exists()  # no database, no key, no config.py
    home, card = _home(tmp_path / "h")
    assert _issue(home, card, "--base-url", url).exit_code == 2 and _credentials(home) == 0


def test_the_readme_documents_the_public_address() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for needle in ("--public-url", "CANTEEN_PUBLIC_URL", "--base-url"):
        assert needle in readme, needle
