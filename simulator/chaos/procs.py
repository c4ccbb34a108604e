"""The chaos run's real processes: the broker, the server and the terminals, each killable.

* :class:`BrokerProcess` — Mosquitto with the project's config (persistence on) on a fixed
  port and data folder, so a restart comes back where terminals expect it; where Mosquitto
  is not installed, the embedded amqtt broker in a child process of its own
  (``python -m simulator.chaos.procs broker PORT``), so it can be SIGKILLed too.
* :class:`ServerProcess` — ``canteen-server --home DIR run --broker URL --port P``.
* :class:`TerminalProcess` — ``canteen-terminal run --config F --events``: tap lines go to
  its standard input (reader ``stdin``), its JSON event lines are read back, each stamped
  with the harness's own wall-clock time (the true time the event was seen).

Every process writes its stderr to a log file in the run's folder.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from shared.broker import (
    EmbeddedBroker,
    MosquittoBroker,
    mosquitto_binary,
    render_mosquitto_conf,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[2]  # the repository (simulator/chaos/procs.py): children start there
log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Child:
    """A child process with its stderr in a log file."""

    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def _spawn(
        self,
        argv: list[str],
        log_path: Path,
        *,
        stdin: bool = False,
        stdout: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self._log = open(log_path, "ab")  # noqa: SIM115 — closed in _reap()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env} if env else None,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else self._log,
            stderr=self._log,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush — a power cut."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def terminate(self, timeout_s: float = 15.0) -> None:
        """SIGTERM and wait (SIGKILL if it will not go)."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait(30)
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except OSError as exc:  # the pipe's reader is already dead
                    log.debug("stdin close: %s", exc)
        self._after_exit()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _after_exit(self) -> None:
        return None


class BrokerProcess(_Child):
    def __init__(self, port: int, data_dir: Path, kind: str = "auto") -> None:
        if kind == "auto":
            kind = "mosquitto" if MosquittoBroker.available() else "embedded"
        self.kind = kind
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> BrokerProcess:
        log = self.data_dir / "broker.log"
        if self.kind == "mosquitto":
            binary = mosquitto_binary()
            if binary is None:
                raise RuntimeError("mosquitto not installed")
            extra = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
            conf = self.data_dir / "mosquitto.conf"
            # the chaos runs test faults, not security: an open broker on loopback
            conf.write_text(render_mosquitto_conf(self.port, str(self.data_dir), extra, anonymous=True))
            self._spawn([binary, "-c", str(conf)], log)
        else:
            self._spawn([sys.executable, "-m", "simulator.chaos.procs", "broker", str(self.port)], log)
        _wait_port_or_exit(self, self.port, 15)
        return self


class ServerProcess(_Child):
    """``env``: added to the child's environment (``CANTEEN_DATABASE_URL`` for PostgreSQL);
    ``name``: its log file's (two server processes may share one data folder)."""

    def __init__(
        self,
        home: Path,
        broker_url: str,
        port: int,
        *,
        env: dict[str, str] | None = None,
        name: str = "server",
    ) -> None:
        self.home = home
        self.broker_url = broker_url
        self.port = port
        self.env = env or {}
        self.name = name
        self.base_url = f"http://127.0.0.1:{port}"
        self.starts = 0

    def start(self) -> ServerProcess:
        argv = [
            sys.executable,
            "-c",
            "from server.cli import main; main()",
            "--home",
            str(self.home),
            "run",
            "--broker",
            self.broker_url,
            "--port",
            str(self.port),
        ]
        self._spawn(argv, self.home / f"{self.name}.log", env=self.env)
        self.starts += 1
        _wait_port_or_exit(self, self.port, 30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base_url + "/api/v1/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not answer /api/v1/health")


class TerminalProcess(_Child):
    """One incarnation of a terminal process; ``events`` are shared across incarnations."""

    def __init__(self, config_path: Path, log_path: Path, events: list[dict[str, Any]]) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.events = events
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> TerminalProcess:
        argv = [sys.executable, "-m", "terminal.cli", "run", "--config", str(self.config_path), "--events"]
        self._spawn(argv, self.log_path, stdin=True, stdout=True)
        self._reader = threading.Thread(
            target=self._read, name=f"events-{self.config_path.stem}", daemon=True
        )
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "garbage", "line": line.decode(errors="replace")}
            event["_seen_ms"] = _now_ms()
            self.events.append(event)

    def send(self, lines: list[str]) -> bool:
        """Tap lines to the card reader; False if the process is gone."""
        if not self.running:
            return False
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def _after_exit(self) -> None:
        if self._reader is not None:
            self._reader.join(10)  # every line the process wrote before it died has been read


def _wait_port_or_exit(child: _Child, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.running:
            raise RuntimeError(f"{type(child).__name__} exited at start (see its log)")
        try:
            wait_for_port(port, 0.2)
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"{type(child).__name__}: nothing listening on {port}")


def _serve_embedded_broker(port: int) -> None:
    broker = EmbeddedBroker(port).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    broker.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "broker":
        _serve_embedded_broker(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m simulator.chaos.procs broker PORT")
