"""Telling systemd how a service is doing (``sd_notify(3)``): ready, stopping, and the watchdog.

Under a unit with ``Type=notify`` systemd passes a datagram socket in ``$NOTIFY_SOCKET``;
the process sends it ``READY=1`` once it serves, ``STOPPING=1`` when it begins to stop and,
with ``WatchdogSec=`` set (``$WATCHDOG_USEC``), ``WATCHDOG=1`` more often than that — or
systemd kills and restarts it. The protocol is one ``sendto`` of ``KEY=value`` lines, so it
is written here rather than taken from a package (the ``sdnotify`` package has had no
release since 2017; ``systemd-python`` needs libsystemd headers to build). Outside systemd
(no ``$NOTIFY_SOCKET``) every call does nothing.

:class:`Watchdog` pings only while its ``healthy`` check passes: a process whose ingest or
sync thread died stops pinging and systemd restarts it, where a bare timer would keep a
half-dead process alive forever.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd; False when not run by systemd."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify %s failed: %s", state.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of ``WatchdogSec`` (how often to ping), or None when the watchdog is off or
    meant for another process (``$WATCHDOG_PID``)."""
    env = env if env is not None else os.environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class Watchdog:
    """Pings systemd's watchdog every half ``WatchdogSec`` while ``healthy()`` is true."""

    def __init__(self, healthy: Callable[[], bool], env: Mapping[str, str] | None = None) -> None:
        self._healthy = healthy
        self._env = dict(env if env is not None else os.environ)
        self.interval_s = watchdog_interval_s(self._env)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self.pings = 0

    def start(self) -> Watchdog:
        if self.interval_s is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        assert self.interval_s is not None
        warned = False
        while not self._stop.wait(self.interval_s):
            if self._healthy():
                self.pings += notify("WATCHDOG=1", self._env)
                warned = False
            elif not warned:
                log.error("watchdog: unhealthy, no longer pinging systemd (it will restart this service)")
                warned = True
