"""The deployment files in ``deploy/``: the systemd units pass ``systemd-analyze verify``
(every directive known, every referenced unit and program found) with no warning, their
hardening keeps systemd's exposure score low, their commands are ones our CLIs accept, and
the logrotate configuration parses."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli.root import main as server_main
from terminal.cli import main as terminal_main

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
VENV_BIN = "/opt/canteen/.venv/bin/"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
LOGROTATE = shutil.which("logrotate") or next(
    (p for p in ("/usr/sbin/logrotate", "/sbin/logrotate") if Path(p).is_file()), None
)
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def _staged(tmp_path: Path) -> Path:
    """The units with the virtualenv's programs pointed at stand-ins (verify checks that
    every ExecStart program exists and is executable)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("canteen-server", "canteen-terminal"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.iterdir():
        (out / unit.name).write_text(unit.read_text().replace(VENV_BIN, f"{bin_dir}/"))
    return out


def _units() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".path"))


@needs_systemd
def test_units_pass_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    staged = _staged(tmp_path)
    r = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *(str(staged / u.name) for u in _units())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout


@needs_systemd
@pytest.mark.parametrize("unit", ["canteen-server", "canteen-broker", "canteen-terminal", "canteen-backup"])
def test_services_are_hardened(tmp_path: Path, unit: str) -> None:
    staged = _staged(tmp_path)
    r = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(staged / f"{unit}.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) < 3.0, f"{unit}: exposure {m.group(1)}"


def _service(unit: str) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(UNITS / unit)
    return cp["Service"]


@pytest.mark.parametrize(
    ("unit", "cli"),
    [
        ("canteen-server.service", server_main),
        ("canteen-backup.service", server_main),
        ("canteen-terminal.service", terminal_main),
    ],
)
def test_unit_commands_are_ones_the_cli_accepts(unit: str, cli) -> None:  # noqa: ANN001
    service = _service(unit)
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith(VENV_BIN)
    # the same words with --help: click checks every option before printing help
    words = [a for a in argv[1:] if not a.startswith("/")]
    r = CliRunner().invoke(cli, [*words, "--help"])
    assert r.exit_code == 0, r.output
    for option in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
        assert option in r.output, f"{unit}: {option} is not an option of {words}"


@pytest.mark.parametrize("unit", ["canteen-server.service", "canteen-terminal.service"])
def test_our_services_notify_and_have_a_watchdog_under_a_dedicated_user(unit: str) -> None:
    s = _service(unit)
    assert s["Type"] == "notify" and s["WatchdogSec"] and s["Restart"] == "on-failure"
    assert s["User"] == "canteen" and s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict"
    assert "CANTEEN_LOG_JSON=1" in s["Environment"]


@pytest.mark.skipif(LOGROTATE is None, reason="logrotate not installed (apt-get install logrotate)")
def test_logrotate_config_parses(tmp_path: Path) -> None:
    # the service user does not exist on a test machine: rotate as root here
    conf = tmp_path / "canteen"
    conf.write_text(
        (ROOT / "deploy" / "logrotate" / "canteen").read_text().replace("su canteen canteen", "su root root")
    )
    conf.chmod(0o644)
    r = subprocess.run(
        [str(LOGROTATE), "--debug", "--state", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "error" not in r.stderr.lower(), r.stderr
