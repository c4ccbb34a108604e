"""The background thread each downstream publisher runs (deltas, update offers, backup
marks): it publishes a round of sealed, retained messages, waits ``poll_s`` or until poked,
and again, until stopped."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Self

from shared.clock import Clock
from shared.protocol import ServerKey, seal_server

Publish = Callable[[str, bytes, bool], bool]
"""(topic, payload, retain) → whether the broker took it."""


class PollingPublisher:
    """A daemon thread that runs :meth:`_round` on ``conn`` every ``poll_s`` (sooner after
    :meth:`poke`) until :meth:`stop`; a round sends with :meth:`_send_retained`. A database
    error in a round is logged (``<what>: database error``) and the next round tries again.
    A subclass sets ``_log`` and ``_what`` and may override :meth:`_run` (another order) and
    :meth:`_stopped` (release what the loop held)."""

    _log: logging.Logger
    _what: str

    def __init__(
        self,
        conn: sqlite3.Connection,
        key: ServerKey,
        publish: Publish,
        clock: Clock,
        *,
        thread_name: str,
        poll_s: float,
    ) -> None:
        self._conn = conn
        self._key = key
        self._publish = publish
        self._clock = clock
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self._stopped()

    def poke(self) -> None:
        self._wake.set()

    def _stopped(self) -> None:
        """After the thread ended (or 5 s passed): nothing to release by default."""

    def _send_retained(self, topic: str, kind: str, body: dict[str, Any]) -> bool:
        """Seal ``body`` as a server message of ``kind`` and publish it retained on ``topic``;
        False when the broker did not take it (not connected)."""
        return self._publish(topic, seal_server(kind, body, self._key, self._clock.now_ms()), True)

    def _wait(self) -> None:
        self._wake.wait(self._poll_s)
        self._wake.clear()

    def _guarded_round(self) -> None:
        try:
            self._round()
        except sqlite3.Error as exc:
            self._log.error("%s: database error: %s", self._what, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._guarded_round()
            self._wait()

    def _round(self) -> None:
        raise NotImplementedError
