"""The background thread each downstream publisher runs (deltas, update offers, backup
marks): it publishes a round, waits ``poll_s`` or until poked, and again, until stopped."""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Self


class PollingPublisher:
    """A daemon thread that runs :meth:`_round` every ``poll_s`` (sooner after :meth:`poke`)
    until :meth:`stop`; a database error in a round is logged (``<what>: database error``)
    and the next round tries again. A subclass sets ``_log`` and ``_what`` and may override
    :meth:`_run` (another order) and :meth:`_stopped` (release what the loop held)."""

    _log: logging.Logger
    _what: str

    def __init__(self, thread_name: str, poll_s: float) -> None:
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
