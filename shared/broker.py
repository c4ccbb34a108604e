"""Starting an MQTT broker: embedded (amqtt, in-process) or Mosquitto (a child process).

With no broker URL configured, the demo and the simulator run an embedded pure-Python
broker in a background thread, so they need no system package. Tests prefer a real
Mosquitto started from ``deploy/mosquitto/canteen.conf.in`` on a free port when the binary
exists, and fall back to the embedded broker otherwise. This is the only module that
imports amqtt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

CONF_TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "canteen.conf.in"


class Broker(Protocol):
    kind: str
    url: str

    def stop(self) -> None: ...


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port} after {timeout_s}s")


class EmbeddedBroker:
    """amqtt running on its own event loop in a daemon thread."""

    kind = "embedded"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def start(self) -> EmbeddedBroker:
        # amqtt logs every abruptly closed client (our fault injection does that on purpose)
        # at ERROR; its own failures still surface through start()
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None:
            raise RuntimeError(f"embedded broker failed: {self._error}") from self._error
        wait_for_port(self.port)
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker as AmqttBroker

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def main() -> None:
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            broker = AmqttBroker(config)
            self._stop_event = asyncio.Event()
            await broker.start()
            self._ready.set()
            await self._stop_event.wait()
            await broker.shutdown()

        try:
            loop.run_until_complete(main())
        except Exception as exc:  # noqa: BLE001 — handed to start(), which raises it
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop_event is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(10)


def render_mosquitto_conf(port: int, data_dir: str, extra: str = "") -> str:
    return CONF_TEMPLATE.read_text().format(port=port, data_dir=data_dir, extra=extra)


class MosquittoBroker:
    """A real Mosquitto child process with the project's configuration on a free port."""

    kind = "mosquitto"

    def __init__(self, port: int | None = None, data_dir: str | None = None) -> None:
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="canteen-mosquitto-")
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return mosquitto_binary() is not None

    def start(self) -> MosquittoBroker:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto binary not found")
        # run as root (CI), Mosquitto would switch to user "mosquitto" and lose the data dir
        extra = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        conf = Path(self.data_dir) / "mosquitto.conf"
        conf.write_text(render_mosquitto_conf(self.port, self.data_dir, extra))
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._proc = None
                raise RuntimeError(f"mosquitto exited at start: {err.strip()}")
            try:
                wait_for_port(self.port, timeout_s=0.2)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def mosquitto_binary() -> str | None:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def start_broker(kind: str = "auto") -> EmbeddedBroker | MosquittoBroker:
    """``embedded``, ``mosquitto``, or ``auto`` (Mosquitto when installed, else embedded)."""
    if kind == "mosquitto" or (kind == "auto" and MosquittoBroker.available()):
        return MosquittoBroker().start()
    if kind in ("auto", "embedded"):
        return EmbeddedBroker().start()
    raise ValueError(f"unknown broker kind {kind!r}")
