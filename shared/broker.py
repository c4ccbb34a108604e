"""Starting an MQTT broker: embedded (amqtt, in-process) or Mosquitto (a child process).

With no broker URL configured, the demo and the simulator run an embedded pure-Python
broker in a background thread, so they need no system package. **The embedded broker is
open** (anyone on loopback may connect, read and write everything): it is for a laptop, never
for production. Tests prefer a real Mosquitto started from ``deploy/mosquitto/canteen.conf.in``
on a free port when the binary exists, and fall back to the embedded broker otherwise. This
is the only module that imports amqtt.

Production is Mosquitto, locked: :func:`render_mosquitto_conf` renders no anonymous access,
a password file (:func:`mosquitto_password_line`, Mosquitto 2's PBKDF2-SHA512 ``$7$`` form)
and an ACL file, both written by the server (``server.registry.broker_users``), and the client
id bound to the user name. Only the general tests' broker is rendered ``anonymous=True``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
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


def wait_for_child_port(
    proc: subprocess.Popen[bytes], port: int, timeout_s: float, why_exited: Callable[[], str]
) -> None:
    """A child broker process listening on ``port``: RuntimeError (with ``why_exited()``, its
    own words) if it exits first, TimeoutError if it is not listening within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited at start: {why_exited().strip()}")
        try:
            wait_for_port(port, timeout_s=0.2)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def find_binary(candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` (a name on PATH or a full path) that is an executable."""
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class ChildBroker:
    """What a broker run as a child process shares: its start watch, pid, reload (SIGHUP) and
    stop, and the data folder it removes on stop when it made that folder itself."""

    program = "broker"
    """The program's name, in errors (``mosquitto``, ``nats-server``)."""
    binaries: tuple[str, ...] = ()
    """Where the program may be: a name on PATH or a full path, first found wins."""
    stop_wait_s = 5.0
    """How long ``stop`` waits after SIGTERM before SIGKILL."""

    def __init__(self, data_dir: str | None, temp_prefix: str) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix=temp_prefix)
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def available(cls) -> bool:
        return find_binary(cls.binaries) is not None

    def _binary(self) -> str:
        """The program to run; RuntimeError when it is not installed."""
        binary = find_binary(self.binaries)
        if binary is None:
            raise RuntimeError(f"{self.program} binary not found")
        return binary

    def _watch_start(
        self, proc: subprocess.Popen[bytes], port: int, timeout_s: float, said: Callable[[], str]
    ) -> None:
        """``proc`` listening on ``port``; if it exits first, RuntimeError naming the program
        (and it is forgotten); if it is still not listening after ``timeout_s``, stopped."""
        self._proc = proc
        try:
            wait_for_child_port(proc, port, timeout_s, said)
        except RuntimeError as exc:
            self._proc = None
            raise RuntimeError(f"{self.program} {exc}") from None
        except TimeoutError:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        """The running child's process id (for a reload command: ``kill -HUP <pid>``)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def reload(self) -> None:
        """SIGHUP: the broker re-reads its users and permissions, keeping its clients."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self.program} is not running")
        self._proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(self.stop_wait_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


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


def render_mosquitto_conf(
    port: int,
    data_dir: str,
    extra: str = "",
    *,
    listen: str = "127.0.0.1",
    password_file: str | None = None,
    acl_file: str | None = None,
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    anonymous: bool = False,
) -> str:
    """The project's Mosquitto configuration. Locked unless ``anonymous`` (the general
    tests' broker only): no anonymous client, ``password_file`` and ``acl_file`` (both
    required), the client id bound to the user name. ``cafile``/``certfile``/``keyfile``
    (all three) make the listener TLS. ``listen``: the address to bind ("" for all)."""
    listener = f"listener {port} {listen}".rstrip()
    tls = (cafile, certfile, keyfile)
    if any(tls) and not all(tls):
        raise ValueError("TLS needs cafile, certfile and keyfile together")
    if all(tls):
        listener += f"\ncafile {cafile}\ncertfile {certfile}\nkeyfile {keyfile}\ntls_version tlsv1.2"
    if anonymous:
        security = "# TESTS ONLY: anonymous clients, no ACL\nallow_anonymous true"
    else:
        if not password_file or not acl_file:
            raise ValueError("a locked broker needs a password file and an ACL file")
        security = "\n".join(
            [
                "allow_anonymous false",
                f"password_file {password_file}",
                f"acl_file {acl_file}",
                "# the client id is the user name: no terminal can take over another's session",
                "use_username_as_clientid true",
            ]
        )
    return CONF_TEMPLATE.read_text().format(
        listener=listener + "\n", data_dir=data_dir, security=security, extra=extra
    )


MOSQUITTO_PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes


def mosquitto_password_line(user: str, password: str, *, salt: bytes | None = None) -> str:
    """One line of a Mosquitto 2 password file: ``user:$7$iterations$salt$hash``, PBKDF2 with
    SHA-512 (the format ``mosquitto_passwd`` writes)."""
    if not user or ":" in user or "\n" in user:
        raise ValueError(f"not a usable broker user name: {user!r}")
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_PBKDF2_ITERATIONS, 64)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"{user}:$7${MOSQUITTO_PBKDF2_ITERATIONS}${b64(salt)}${b64(digest)}"


class MosquittoBroker(ChildBroker):
    """A real Mosquitto child process with the project's configuration on a free port."""

    kind = "mosquitto"
    program = "mosquitto"
    binaries = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | None = None,
        *,
        password_file: str | None = None,
        acl_file: str | None = None,
        tls: tuple[str, str, str] | None = None,
    ) -> None:
        """Without ``password_file``/``acl_file``: the general tests' open broker; with them,
        the production (locked) configuration. ``tls``: (CA file, certificate, key) for a
        TLS listener (``mqtts://``)."""
        self.password_file = password_file
        self.acl_file = acl_file
        self.tls = tls
        self.port = port or free_port()
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        super().__init__(data_dir, "canteen-mosquitto-")

    def start(self) -> MosquittoBroker:
        binary = self._binary()
        # run as root (CI), Mosquitto would switch to user "mosquitto" and lose the data dir
        extra = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        conf = Path(self.data_dir) / "mosquitto.conf"
        locked = self.password_file is not None
        conf.write_text(
            render_mosquitto_conf(
                self.port,
                self.data_dir,
                extra,
                password_file=self.password_file,
                acl_file=self.acl_file,
                anonymous=not locked,
                **dict(zip(("cafile", "certfile", "keyfile"), self.tls or (), strict=False)),
            )
        )
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        said = lambda: proc.stderr.read().decode(errors="replace") if proc.stderr else ""  # noqa: E731
        self._watch_start(proc, self.port, 10, said)
        return self


def mosquitto_binary() -> str | None:
    return find_binary(MosquittoBroker.binaries)


def start_broker(kind: str = "auto") -> EmbeddedBroker | MosquittoBroker:
    """``embedded``, ``mosquitto``, or ``auto`` (Mosquitto when installed, else embedded)."""
    if kind == "mosquitto" or (kind == "auto" and MosquittoBroker.available()):
        return MosquittoBroker().start()
    if kind in ("auto", "embedded"):
        return EmbeddedBroker().start()
    raise ValueError(f"unknown broker kind {kind!r}")
