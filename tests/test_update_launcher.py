"""The launcher (``terminal.launcher``) with stand-in agents: real child processes whose
``terminal.cli`` is a few lines that switch, confirm, hang or crash as told.

Each version folder holds a fake ``terminal`` package; the launcher runs it exactly as it
runs the real agent (``python -P -m terminal.cli run …`` with the version folder first on
the import path), so what is tested is the launcher's own behaviour: restarting into a
switched version, rolling back on a missed deadline, on a crash of the version on trial
and after too many starts, and tidying the folder after a power cut.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from simulator.waiting import wait_until
from terminal.launcher import MAX_PENDING_STARTS, Launcher, layout_from_config
from terminal.update_layout import RESTART_EXIT_CODE, Layout

# A stand-in agent. It appends its version to runs.log, then does what behaviour.json says:
# "switch" (to "to", unless blocked: as the real updater, between sales), "confirm" (what
# the server's ack does), "hang" (never reaches the server), "crash", or "serve" (confirmed).
FAKE_CLI = r"""
import json, os, sys, time
from pathlib import Path
RESTART_EXIT_CODE = RESTART_EXIT_CODE_VALUE
here = Path(__file__).resolve().parent.parent
root = here.parent.parent
version = here.name
with open(root / "runs.log", "a") as f:
    f.write(version + "\n")
how = json.loads((here / "behaviour.json").read_text())
state = root / "state"
def write(path, value):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
if how["action"] == "switch":
    blocked = json.loads((state / "blocked.json").read_text()) if (state / "blocked.json").exists() else []
    if how["to"] not in blocked:
        state.mkdir(exist_ok=True)
        mark = {"version": how["to"], "previous": version, "health_s": how.get("health_s", 60)}
        write(state / "pending.json", {**mark, "starts": 0})
        tmp = root / ".current.tmp"
        os.symlink("versions/" + how["to"], tmp)
        os.replace(tmp, root / "current")
        sys.exit(RESTART_EXIT_CODE)
elif how["action"] == "confirm":
    p = state / "pending.json"
    if p.exists() and json.loads(p.read_text())["version"] == version:
        write(state / "last.json", {"state": "confirmed", "version": version})
        os.unlink(p)
elif how["action"] == "crash":
    sys.exit(3)
while True:
    time.sleep(0.1)
"""


def fake_version(root: Path, version: str, **behaviour: object) -> None:
    folder = root / "versions" / version
    (folder / "terminal").mkdir(parents=True)
    (folder / "terminal" / "__init__.py").write_text("")
    (folder / "terminal" / "cli.py").write_text(
        FAKE_CLI.replace("RESTART_EXIT_CODE_VALUE", str(RESTART_EXIT_CODE))
    )
    (folder / "manifest.json").write_text(json.dumps({"version": version}))
    (folder / "behaviour.json").write_text(json.dumps(behaviour))


def runs(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


class Running:
    """A launcher on a thread, stopped (and its agent with it) at the end."""

    def __init__(self, layout: Layout) -> None:
        self.launcher = Launcher(layout, ["--config", "unused.json"])
        self.thread = threading.Thread(target=self.launcher.run, daemon=True)

    def __enter__(self) -> Launcher:
        self.thread.start()
        return self.launcher

    def __exit__(self, *exc: object) -> None:
        self.launcher.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


def test_a_switched_version_is_started_and_stays_once_confirmed(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="switch", to="2", health_s=30)
    fake_version(tmp_path, "2", action="confirm")
    layout.switch("1")
    with Running(layout):
        assert wait_until(lambda: runs(tmp_path) == ["1", "2"] and layout.pending() is None, 20)
    assert layout.current() == "2"
    assert layout.last() == {"state": "confirmed", "version": "2"}
    assert layout.blocked() == set()


def test_a_version_that_misses_its_deadline_is_rolled_back_and_never_tried_again(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="switch", to="2", health_s=1)
    fake_version(tmp_path, "2", action="hang")
    layout.switch("1")
    with Running(layout) as launcher:
        assert wait_until(lambda: runs(tmp_path) == ["1", "2", "1"], 20)
        assert wait_until(lambda: launcher.rollbacks == 1, 30)
    assert layout.current() == "1"
    assert layout.pending() is None
    assert layout.blocked() == {"2"}
    last = layout.last()
    assert last is not None and last["state"] == "rolled_back" and last["version"] == "2"
    assert last["code"] == "update_rolled_back" and last["reported"] is False
    assert runs(tmp_path) == ["1", "2", "1"]  # version 1 did not switch to 2 again


def test_a_crash_of_the_version_on_trial_rolls_back_at_once(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="switch", to="2", health_s=600)
    fake_version(tmp_path, "2", action="crash")
    layout.switch("1")
    with Running(layout):
        assert wait_until(lambda: runs(tmp_path) == ["1", "2", "1"], 20)  # long before 600 s
    assert layout.current() == "1" and layout.blocked() == {"2"}
    assert "exited with 3" in (layout.last() or {}).get("reason", "")


def test_a_crash_of_a_confirmed_version_is_restarted_not_rolled_back(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="crash")
    layout.switch("1")
    with Running(layout) as launcher:
        assert wait_until(lambda: runs(tmp_path)[:2] == ["1", "1"], 20)
    assert layout.current() == "1" and launcher.rollbacks == 0 and layout.blocked() == set()


def test_after_a_power_cut_before_the_switch_the_pending_mark_is_dropped(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="serve")
    fake_version(tmp_path, "2", action="confirm")
    layout.switch("1")
    # marked pending, then the power went before current was switched
    layout.set_pending({"version": "2", "previous": "1", "health_s": 600, "starts": 0})
    with Running(layout):
        assert wait_until(lambda: runs(tmp_path) == ["1"], 20)
    assert layout.pending() is None and layout.current() == "1" and layout.blocked() == set()


def test_after_a_power_cut_just_after_the_switch_the_new_version_starts_on_trial(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="serve")
    fake_version(tmp_path, "2", action="confirm")
    layout.switch("1")
    layout.begin_switch("2", 600, 0)  # the agent's switch; then the power went
    with Running(layout):
        assert wait_until(lambda: runs(tmp_path) == ["2"] and layout.pending() is None, 20)
    assert layout.current() == "2"


def test_a_version_started_too_often_unconfirmed_is_rolled_back_without_starting_it(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="serve")
    fake_version(tmp_path, "2", action="confirm")
    layout.switch("1")
    layout.begin_switch("2", 600, 0)
    pending = layout.pending()
    assert pending is not None
    layout.set_pending({**pending, "starts": MAX_PENDING_STARTS})  # three power cuts on trial
    with Running(layout):
        assert wait_until(lambda: runs(tmp_path) == ["1"], 20)
    assert layout.current() == "1" and layout.blocked() == {"2"}


def test_a_rollback_cut_short_by_a_power_cut_is_finished(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fake_version(tmp_path, "1", action="serve")
    fake_version(tmp_path, "2", action="confirm")  # would confirm itself if it were started
    layout.switch("1")
    layout.begin_switch("2", 600, 0)
    layout.block("2")  # the rollback's first step; then the power went
    with Running(layout):
        assert wait_until(lambda: runs(tmp_path) == ["1"], 20)
    assert layout.current() == "1" and layout.pending() is None
    assert (layout.last() or {}).get("state") == "rolled_back"


def test_the_update_folder_comes_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "t1.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"terminal_id": "T1", "update_root": "../updates"}))
    layout = layout_from_config(config)
    assert layout is not None and layout.root == (tmp_path / "etc" / ".." / "updates")
    config.write_text(json.dumps({"terminal_id": "T1"}))
    assert layout_from_config(config) is None
