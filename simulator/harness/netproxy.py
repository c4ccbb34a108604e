"""A TCP proxy that can cut the network: how the simulator takes a terminal offline.

``NetProxy(target_port)`` listens on a free loopback port and forwards every connection to
the target (or, when it refuses, to the first of ``alternates`` that accepts: a load
balancer in front of several server processes). :meth:`cut` drops all connections and
refuses new ones (a lost network the terminal notices at once); :meth:`blackhole` keeps
sockets open but stops moving bytes (a dead link only keepalives reveal); :meth:`oneway`
lets the terminal's bytes through but drops everything coming back (sales arrive,
acknowledgements vanish); :meth:`heal` restores service (after ``oneway`` by dropping the
now-garbled connections).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

log = logging.getLogger(__name__)


class NetProxy:
    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", alternates: tuple[int, ...] = ()
    ) -> None:
        self.target = (target_host, target_port)
        self.targets = [self.target] + [(target_host, p) for p in alternates]
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._state = "up"  # up | cut | blackhole | oneway
        self._closed = False
        self.cuts = 0
        threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True).start()

    @property
    def state(self) -> str:
        return self._state

    def cut(self) -> None:
        with self._lock:
            self._state = "cut"
            conns, self._conns = self._conns, []
            self.cuts += 1
        for a, b in conns:
            _close(a)
            _close(b)

    def blackhole(self) -> None:
        with self._lock:
            self._state = "blackhole"
            self.cuts += 1

    def oneway(self) -> None:
        with self._lock:
            self._state = "oneway"
            self.cuts += 1

    def heal(self) -> None:
        if self._state == "oneway":
            self.cut()  # the streams lost bytes mid-way: no protocol survives that
        with self._lock:
            self._state = "up"

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._state != "up":
                _close(client)
                continue
            upstream = _connect_first(self.targets)
            if upstream is None:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.append((client, upstream))
            for src, dst, back in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(src, dst, back), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, back: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self._state == "blackhole" and not self._closed:
                    time.sleep(0.05)
                if self._state == "cut" or self._closed:
                    break
                if back and self._state == "oneway":
                    continue
                dst.sendall(data)
        except OSError as exc:
            log.debug("proxy %d: %s", self.port, exc)
        finally:
            _close(src)
            _close(dst)
            with self._lock:
                self._conns = [c for c in self._conns if src not in c]


def _connect_first(targets: list[tuple[str, int]]) -> socket.socket | None:
    for target in targets:
        try:
            return socket.create_connection(target, timeout=5)
        except OSError as exc:
            log.debug("proxy: %s:%d refused (%s)", *target, exc)
    return None


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:  # already closed or never connected
        log.debug("shutdown: %s", exc)
    try:
        sock.close()
    except OSError as exc:
        log.debug("close: %s", exc)
