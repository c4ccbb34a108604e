"""A clerk's first day with ``canteen-server`` (issue 12): each trap, through the real CLI.

Every command says which data folder it works on and refuses one without a database;
``init`` writes a commented ``config.py``; refusals are Chinese first, English beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from server.cli.root import main

ROOT = Path(__file__).resolve().parent.parent


def invoke(home: Path | None, *args: str, env: dict[str, str] | None = None) -> Result:
    prefix = ["--home", str(home)] if home is not None else []
    return CliRunner().invoke(main, [*prefix, *args], env=env)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    assert invoke(tmp_path / "home", "init").exit_code == 0
    return tmp_path / "home"


# -- the data folder ---------------------------------------------------------------------------


def test_init_writes_a_commented_config_py_and_keeps_an_existing_one(tmp_path: Path) -> None:
    result = invoke(tmp_path, "init", "--json")
    assert result.exit_code == 0, result.output
    config = tmp_path / "server" / "config.py"
    data = json.loads(result.stdout)
    assert data["config"] == str(config) and data["config_created"] is True
    text = config.read_text(encoding="utf-8")
    for setting in ("DATABASE", "SERVER_KEY_FILE", "BROKER_URL", "YEAR_END_REFUND_TO", "ECNY_GATEWAY"):
        assert f"# {setting} = " in text
    namespace: dict[str, object] = {}
    exec(compile(text, str(config), "exec"), namespace)  # all commented out: sets nothing
    assert not [k for k in namespace if k.isupper()]
    config.write_text('YEAR_END_REFUND_TO = "city_finance"\n', encoding="utf-8")
    again = invoke(tmp_path, "init", "--json")
    assert json.loads(again.stdout)["config_created"] is False
    assert config.read_text(encoding="utf-8") == 'YEAR_END_REFUND_TO = "city_finance"\n'


def test_config_py_is_read_by_the_commands(home: Path) -> None:
    (home / "server" / "config.py").write_text('YEAR_END_REFUND_TO = "nowhere"\n', encoding="utf-8")
    result = invoke(home, "close-year", "2020", "--force")
    assert result.exit_code == 2 and "refund_to must be one of" in result.stderr


def test_every_command_says_which_data_folder_it_uses(home: Path) -> None:
    result = invoke(home, "unit", "list")
    assert result.exit_code == 0
    assert result.stderr == f"数据目录 / data folder: {home}\n"
    assert result.stdout == "(none)\n"


def test_a_folder_without_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    for args in (("unit", "list"), ("check",), ("report", "daily")):
        result = invoke(tmp_path / "nowhere", *args)
        assert result.exit_code == 2, result.output
        assert f"数据目录 / data folder: {tmp_path / 'nowhere'}" in result.stderr
        assert (
            "错误：数据目录中没有数据库：请先运行 canteen-server init，或设置 CANTEEN_HOME" in result.stderr
        )
        assert "error: no database in the data folder: run canteen-server init first" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_without_home_or_canteen_home_it_refuses_instead_of_creating_var(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CANTEEN_HOME"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", "from server.cli import main; main()", "unit", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"数据目录 / data folder: {tmp_path / 'var'}" in proc.stderr
    assert "canteen-server init" in proc.stderr and "CANTEEN_HOME" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "var").exists()


def test_canteen_home_names_the_folder(home: Path) -> None:
    result = invoke(None, "unit", "list", env={"CANTEEN_HOME": str(home)})
    assert result.exit_code == 0 and str(home) in result.stderr


def test_help_needs_no_data_folder(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nowhere", "unit", "list", "--help")
    assert result.exit_code == 0 and "数据目录" not in result.output


# -- the broker's data folder ---------------------------------------------------------------------


def test_mosquitto_config_keeps_the_broker_data_in_the_data_folder(tmp_path: Path) -> None:
    result = invoke(tmp_path, "mosquitto-config", "--port", "1884")
    assert result.exit_code == 0, result.output
    assert f"persistence_location {tmp_path / 'mosquitto'}/" in result.stdout
    assert "/var/lib/mosquitto" not in result.stdout and "listener 1884" in result.stdout
    assert (tmp_path / "mosquitto").is_dir()
    other = tmp_path / "broker" / "data"
    result = invoke(tmp_path, "mosquitto-config", "--data-dir", str(other))
    assert f"persistence_location {other}/" in result.stdout and other.is_dir()
