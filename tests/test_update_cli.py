"""The bureau's update commands: the release key, building, offering in stages, status."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner, Result

from server.cli.root import main
from server.infra.db import open_db
from simulator.harness.world import demo_world
from tests.helpers import terminal as provision_terminal

NOW = 1_764_000_000_000


def cli(home: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--home", str(home), *args])


def body(result: Result) -> dict:
    """The JSON a command printed (after the data-folder line on stderr, mixed in by the runner)."""
    text = result.output
    return json.loads(text[text.index("{") :])


def setup(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert cli(home, "init").exit_code == 0
    conn = open_db(home / "server" / "canteen.sqlite")
    demo_world(conn, NOW, diners=3)
    for _ in range(40):
        provision_terminal(conn, "C01", NOW)
    conn.close()
    return home


def test_the_release_key_is_made_once_and_pinned_in_new_terminals(tmp_path: Path) -> None:
    home = setup(tmp_path)
    key = tmp_path / "secure" / "release_key.hex"
    made = cli(home, "release-key-new", "--out", str(key))
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = (home / "server" / "release_public_key.hex").read_text().strip()
    assert public in made.output and key.read_text().strip() not in made.output
    again = cli(home, "release-key-new", "--out", str(key))
    assert again.exit_code == 2 and "already_exists" in again.output
    out = tmp_path / "t9.json"
    made = cli(home, "provision-terminal", "C01", "--id", "T9", "--with-secret", "--out", str(out))
    assert made.exit_code == 0, made.output
    assert json.loads(out.read_text())["release_public_key"] == public


def test_a_bundle_is_built_offered_in_stages_and_withdrawn(tmp_path: Path) -> None:
    home = setup(tmp_path)
    key = tmp_path / "release_key.hex"
    assert cli(home, "release-key-new", "--out", str(key)).exit_code == 0
    bundle = tmp_path / "terminal-9.0.bundle"
    built = cli(home, "bundle-build", "--version", "9.0", "--key", str(key), str(bundle), "--json")
    assert built.exit_code == 0, built.output
    assert body(built)["files"] > 50 and bundle.stat().st_size == body(built)["size"]

    first = body(cli(home, "update-offer", str(bundle), "--fleet", "--stage", "5%", "--json"))
    wider = body(cli(home, "update-offer", str(bundle), "--fleet", "--stage", "50%", "--json"))
    assert set(first["terminals"]) <= set(wider["terminals"]) and len(wider["terminals"]) > len(
        first["terminals"]
    )
    assert first["offer_id"] == wider["offer_id"]  # the same offer, widened
    status = body(cli(home, "update-status", "--json"))
    assert status["bundles"][0]["offers"] == [
        {
            "canteen_id": None,
            "stage_pct": 50,
            "offered_at_ms": status["bundles"][0]["offers"][0]["offered_at_ms"],
        }
    ]
    offered = [t["terminal_id"] for t in status["terminals"] if t["offered"].get("terminal") == "9.0"]
    assert sorted(offered) == sorted(wider["terminals"])

    assert cli(home, "update-withdraw", "terminal", "9.0").exit_code == 0
    status = body(cli(home, "update-status", "--json"))
    assert not any(t["offered"] for t in status["terminals"])


def test_a_bundle_the_release_key_did_not_sign_is_never_offered(tmp_path: Path) -> None:
    home = setup(tmp_path)
    assert cli(home, "release-key-new", "--out", str(tmp_path / "mine.hex")).exit_code == 0
    other_home = tmp_path / "other"
    assert cli(other_home, "init").exit_code == 0
    stranger = tmp_path / "stranger.hex"
    assert cli(other_home, "release-key-new", "--out", str(stranger)).exit_code == 0
    bundle = tmp_path / "terminal-9.1.bundle"
    assert cli(home, "bundle-build", "--version", "9.1", "--key", str(stranger), str(bundle)).exit_code == 0
    refused = cli(home, "update-offer", str(bundle), "--canteen", "C01")
    assert refused.exit_code == 2
    assert "更新包签名无效" in refused.output and "update_bad_signature" in refused.output
    assert body(cli(home, "update-status", "--json"))["bundles"] == []


def test_the_commands_refuse_what_makes_no_sense(tmp_path: Path) -> None:
    home = setup(tmp_path)
    no_key = cli(home, "bundle-build", "--version", "9.2", str(tmp_path / "b.bundle"))
    assert no_key.exit_code == 2 and "release_key_missing" in no_key.output
    bundle = tmp_path / "x.bundle"
    bundle.write_bytes(b"x")
    both = cli(home, "update-offer", str(bundle), "--canteen", "C01", "--fleet")
    assert both.exit_code == 2 and "--fleet" in both.output
    stage = cli(home, "update-offer", str(bundle), "--fleet", "--stage", "0.5%")
    assert stage.exit_code == 2 and "invalid_input" in stage.output
    nothing = cli(home, "update-withdraw", "terminal", "1.0")
    assert nothing.exit_code == 2 and "update_unknown" in nothing.output
