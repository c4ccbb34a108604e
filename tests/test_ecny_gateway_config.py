"""Which e-CNY gateway the server uses: none unless configured; the simulated one only by
explicit choice, with this installation's own callback key (issue 11, finding 7)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from click.testing import CliRunner

from server.app import create_app
from server.cli import main as server_cli
from shared.clock import FakeClock
from shared.ecny_gateway import Notification, sign_notification
from terminal.config import TerminalConfig

# the key the simulated gateway used to sign with, a constant in the source until issue 11
OLD_CONSTANT_KEY = b"simulated-merchant-key"


def _note() -> bytes:
    return Notification("O-1", "TR-1", 1200, "paid", 1_767_672_000_000).body()


def test_without_a_configured_gateway_ecny_is_refused_with_a_clear_code(
    tmp_path: Path, clock: FakeClock
) -> None:
    client = create_app({"HOME": str(tmp_path), "TESTING": True}, clock=clock).test_client()
    body = _note()
    r = client.post(
        "/api/v1/ecny/notify",
        data=body,
        headers={"X-Ecny-Signature": sign_notification(OLD_CONSTANT_KEY, body)},
    )
    assert r.status_code == 404
    assert "ecny_not_configured" in r.get_data(as_text=True)


def test_a_callback_forged_with_the_old_constant_key_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    app = create_app({"HOME": str(tmp_path), "TESTING": True, "ECNY_GATEWAY": "simulated"}, clock=clock)
    client = app.test_client()
    body = _note()
    forged = client.post(
        "/api/v1/ecny/notify",
        data=body,
        headers={"X-Ecny-Signature": sign_notification(OLD_CONSTANT_KEY, body)},
    )
    assert forged.status_code == 400
    assert "ecny_bad_callback" in forged.get_data(as_text=True)
    # the installation's own key (0600, made on first use or at init) is what signs
    key_file = Path(app.config["ECNY_SIM_KEY_FILE"])
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    assert key != OLD_CONSTANT_KEY and len(key) == 32
    genuine = client.post(
        "/api/v1/ecny/notify", data=body, headers={"X-Ecny-Signature": sign_notification(key, body)}
    )
    assert genuine.status_code == 200, genuine.get_json()


def test_init_makes_the_installation_key_and_terminals_default_to_no_gateway(tmp_path: Path) -> None:
    result = CliRunner().invoke(server_cli, ["--home", str(tmp_path), "init"])
    assert result.exit_code == 0, result.output
    key_file = tmp_path / "server" / "ecny_simulated_key.hex"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert key_file.read_text().strip() not in result.output
    assert TerminalConfig("T1", "C1", "00", "00", "mqtt://x", "http://x").ecny_gateway == "none"
