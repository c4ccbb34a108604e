"""Every CLI command has help text and exits 0 on --help (the sqlite-utils rule)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from server.cli.root import main as server_main
from simulator.cli import main as sim_main
from terminal.cli import main as terminal_main


def _commands(group: click.Group) -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((name, cmd))
        if isinstance(cmd, click.Group):
            out += [(f"{name} {n}", c) for n, c in _commands(cmd)]
    return out


ALL = [(g, name) for g in (server_main, terminal_main, sim_main) for name, _ in _commands(g)]


@pytest.mark.parametrize(("group", "name"), ALL, ids=[f"{g.name}:{n}" for g, n in ALL])
def test_every_command_has_help(group: click.Group, name: str) -> None:
    cmd = dict(_commands(group))[name]
    assert cmd.help, f"{name} has no help text"
    result = CliRunner().invoke(group, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output


def test_server_check_passes_on_a_fresh_database(tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    assert runner.invoke(server_main, ["--home", str(tmp_path), "init", "--json"]).exit_code == 0
    result = runner.invoke(server_main, ["--home", str(tmp_path), "check", "--json"])
    assert result.exit_code == 0, result.output
    assert '"ok": true' in result.output


def test_server_check_fails_on_a_broken_ledger(tmp_path) -> None:  # noqa: ANN001
    from server.infra.db import open_db

    runner = CliRunner()
    runner.invoke(server_main, ["--home", str(tmp_path), "init"])
    conn = open_db(tmp_path / "server" / "canteen.sqlite")
    conn.execute(
        "INSERT INTO accounts(id, kind, balance_fen) VALUES ('holder:X:subsidy:2026', 'subsidy_purse', 100)"
    )
    conn.close()
    result = runner.invoke(server_main, ["--home", str(tmp_path), "check"])
    assert result.exit_code == 1
    assert "ledger_sum_nonzero" in result.output


def test_domain_errors_become_a_clear_cli_message(tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    assert runner.invoke(server_main, ["--home", str(tmp_path), "init"]).exit_code == 0
    result = runner.invoke(server_main, ["--home", str(tmp_path), "provision-terminal", "NOPE"])
    assert result.exit_code == 2
    assert "错误：食堂不存在（unknown_canteen）\nerror: unknown canteen: NOPE" in result.stderr
