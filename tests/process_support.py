"""What the tests that run real processes share: the repository root, a free port, the
server CLI as a child process, and a terminal command run with ``--events`` (lines in on
stdin, one JSON event a line out, read by a thread)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``canteen-server ARGS`` as a child process, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", "from server.cli import main; main()", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


class EventsProcess:
    """``argv`` as a child process in the repository root; its stderr goes to ``log_path``,
    its events to :attr:`events` (a line that is not JSON as a ``garbage`` event)."""

    wait_s: float = 30

    def __init__(self, argv: list[str], log_path: Path, **popen: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self._log = open(log_path, "ab")  # noqa: SIM115 — closed in wait()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, **popen
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "garbage", "line": line.decode(errors="replace")})

    def has(self, **match: Any) -> bool:
        return any(all(e.get(k) == v for k, v in match.items()) for e in list(self.events))

    def count(self, **match: Any) -> int:
        return sum(all(e.get(k) == v for k, v in match.items()) for e in list(self.events))

    def send(self, lines: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.wait()

    def wait(self) -> None:
        self.proc.wait(self.wait_s)
        self._reader.join(10)  # every line the dead process wrote has been read
        self._log.close()
