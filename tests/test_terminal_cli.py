"""A canteen operator's first day with ``canteen-terminal``: the configuration is found and
checked before anything runs, relative paths are the configuration's own, ``totals`` and
``status`` never create an empty database, and the tap line formats are documented where
the operator looks (``run --help``, README) exactly as they parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.clock import ms_from_china
from terminal.authorize import TapRequest
from terminal.cli import main
from terminal.config import TerminalConfig
from terminal.readers import LINE_FORMATS, parse_line
from terminal.reversal_flow import ReversalLine
from terminal.store import Store

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "terminal_id": "T1",
    "canteen_id": "C01",
    "secret_hex": "00" * 32,
    "server_public_key": "00" * 32,
    "broker_url": "mqtt://127.0.0.1:1",
    "server_url": "http://127.0.0.1:1",
}


def _write(folder: Path, settings: dict, name: str = "t1.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(settings))
    return path


def _invoke(args: list[str], **env: str):  # noqa: ANN202
    return CliRunner().invoke(main, args, env=env or None)


def test_a_relative_db_path_is_the_configuration_folders(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    folder = tmp_path / "etc"
    config = _write(
        folder, {**BASE, "db_path": "data/t1.sqlite", "reader": "fifo:taps", "camera": "file:x.jpg"}
    )
    loaded = TerminalConfig.load(config)
    assert loaded.db_path == str(folder / "data" / "t1.sqlite")
    assert loaded.reader == f"fifo:{folder / 'taps'}" and loaded.camera == f"file:{folder / 'x.jpg'}"
    absolute = _write(tmp_path, {**BASE, "db_path": "/var/lib/t.sqlite", "reader": "stdin"}, "abs.json")
    assert TerminalConfig.load(absolute).db_path == "/var/lib/t.sqlite"
    assert TerminalConfig.load(absolute).reader == "stdin"
    # the operator runs status from somewhere else: it reads the terminal's database
    (folder / "data").mkdir()
    store = Store(folder / "data" / "t1.sqlite")
    store.set_metas({"link_state": "online", "last_sync_ms": str(ms_from_china("2026-01-06T11:00"))})
    store.close()
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _invoke(["status", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "在线 online" in result.output and "2026-01-06 11:00:00" in result.output
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("command", [["status"], ["totals"], ["status", "--json"], ["totals", "--json"]])
def test_totals_and_status_refuse_to_create_a_database(tmp_path: Path, command: list[str]) -> None:
    config = _write(tmp_path, {**BASE, "db_path": "t1.sqlite"})
    result = _invoke([*command, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "终端数据库不存在" in result.output and "the terminal database does not exist" in result.output
    assert str(tmp_path / "t1.sqlite") in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t1.sqlite").exists()


def test_a_file_that_is_not_a_terminal_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t1.sqlite").write_bytes(b"not a database at all" * 100)
    config = _write(tmp_path, {**BASE, "db_path": "t1.sqlite"})
    result = _invoke(["status", "--config", str(config)])
    assert (
        result.exit_code == 2
        and "配置文件有误" in result.output
        and "not a terminal database" in result.output
    )


def test_the_configuration_may_come_from_the_environment(tmp_path: Path) -> None:
    config = _write(tmp_path, {**BASE, "db_path": "t1.sqlite"})
    Store(tmp_path / "t1.sqlite").close()
    result = _invoke(["status", "--json"], CANTEEN_TERMINAL_CONFIG=str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["terminal_id"] == "T1"


BAD_CONFIGS = [
    pytest.param(None, "no such file", id="missing-file"),
    pytest.param("{not json", "not JSON", id="not-json"),
    pytest.param("[1, 2]", "expected a JSON object", id="not-an-object"),
    pytest.param({k: v for k, v in BASE.items() if k != "secret_hex"}, '"secret_hex"', id="missing-key"),
    pytest.param({"terminal_id": "T1"}, '"canteen_id"', id="nearly-empty"),
    pytest.param({**BASE, "batch_size": "500"}, '"batch_size" must be a whole number', id="wrong-type"),
    pytest.param({**BASE, "window": 0}, '"window" must be greater than 0', id="zero-window"),
    pytest.param({**BASE, "secret_hex": "zz"}, '"secret_hex" must be hexadecimal', id="bad-hex"),
    pytest.param({**BASE, "db_path": 7}, '"db_path" must be a string', id="db-path-number"),
]


@pytest.mark.parametrize("command", ["run", "totals", "status"])
@pytest.mark.parametrize(("content", "named"), BAD_CONFIGS)
def test_a_bad_configuration_is_one_bilingual_line(
    tmp_path: Path, command: str, content: object, named: str
) -> None:
    path = tmp_path / "t1.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    result = _invoke([command, "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "配置文件有误" in result.output and "the configuration file is invalid" in result.output
    assert str(path) in result.output and named in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == (["t1.json"] if content is not None else [])


def test_an_unknown_reader_is_a_configuration_error_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {**BASE, "db_path": "t.sqlite", "reader": "keyboard"})
    result = _invoke(["run", "--config", str(path)])
    assert result.exit_code == 2 and "配置文件有误" in result.output
    assert "unknown reader 'keyboard'" in result.output and str(path) in result.output


def test_a_bad_configuration_as_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, {"terminal_id": "T1"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "terminal.cli", "status", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("错误：配置文件有误（config_invalid）")
    assert "\nerror: the configuration file is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr


# what each documented example must mean (written out here, not taken from the code)
EXPECTED = {
    "C00001": TapRequest("C00001"),
    "C00001 shop 350": TapRequest("C00001", kind="shop", amount_fen=350),
    "C00001 shop water tissue*2": TapRequest("C00001", kind="shop", items=(("water", 1), ("tissue", 2))),
    '{"card_id": "C00001", "kind": "shop", "items": [["water", 1]]}': TapRequest(
        "C00001", kind="shop", items=(("water", 1),)
    ),
    "reverse OP0001 246810 last": ReversalLine("OP0001", "246810"),  # an operator's 冲正 (issue 13)
}


def test_the_tap_line_formats_are_in_run_help_and_parse_as_documented() -> None:
    result = _invoke(["run", "--help"])
    assert result.exit_code == 0
    assert {example for _, example, _ in LINE_FORMATS} == set(EXPECTED)
    for _, example, meaning in LINE_FORMATS:
        assert example in result.output and meaning in result.output
        assert parse_line(example) == EXPECTED[example], example


def test_the_readme_documents_the_tap_lines_and_the_config_option() -> None:
    readme = (ROOT / "README.md").read_text()
    for form, example, _ in LINE_FORMATS:
        assert f"`{example}`" in readme and f"`{form}`" in readme, example
    assert "canteen-terminal totals --config" in readme and "canteen-terminal status --config" in readme
    assert "CANTEEN_TERMINAL_CONFIG" in readme
