"""A role (run once: the delta publisher, settlement, clearing) is held by one process at a
time, on PostgreSQL (advisory lock) and on SQLite (a file lock); killing the holder hands it
to a waiting process within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.infra.run_once import Role, run_once
from shared.errors import DomainError

ROOT = Path(__file__).resolve().parent.parent

# a process that tries the role every 50 ms and says each time whether it holds it
CONTENDER = """
import sys, time
from server.infra.run_once import Role
role = Role(sys.argv[1], "test-role")
while True:
    print("held" if role.hold() else "waiting", flush=True)
    time.sleep(0.05)
"""


class Contender:
    def __init__(self, database: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTENDER, database], stdout=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def wait_for(self, what: str, timeout_s: float = 20.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if line == what:
                    return at
            time.sleep(0.02)
        raise AssertionError(f"no {what!r} within {timeout_s}s: {self.lines[-3:]}")

    def said_since(self, since: float) -> set[str]:
        return {line for at, line in list(self.lines) if at >= since}

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return time.monotonic()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "canteen.sqlite")
    else:
        yield request.getfixturevalue("pg_admin_url")


def test_two_processes_never_both_hold_the_role_and_killing_the_holder_hands_it_over(database: str) -> None:
    first = Contender(database)
    try:
        first.wait_for("held")
        second = Contender(database)
        try:
            second.wait_for("waiting")
            watch_from = time.monotonic()
            time.sleep(1.0)  # twenty tries by the second while the first holds it
            assert second.said_since(watch_from) == {"waiting"}
            assert first.said_since(watch_from) == {"held"}
            killed_at = first.kill()
            taken_at = second.wait_for("held")
            assert taken_at - killed_at < 5.0
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_job_already_running_elsewhere_is_refused_and_runs_once_it_is_free(database: str) -> None:
    holder = Role(database, "settlement")
    assert holder.hold()
    ran = []
    with pytest.raises(DomainError) as err, run_once(database, "settlement"):
        ran.append("second")
    assert err.value.code == "job_running" and ran == []
    holder.release()
    with run_once(database, "settlement"):
        ran.append("now")
    assert ran == ["now"]


def test_a_role_is_one_name_per_database(database: str) -> None:
    a, b = Role(database, "delta-publisher"), Role(database, "settlement")
    try:
        assert a.hold() and b.hold()  # different roles do not exclude each other
        assert a.hold()  # holding it again is still holding it
    finally:
        a.release()
        b.release()
    with pytest.raises(ValueError):
        Role(database, "a role; DROP TABLE")
