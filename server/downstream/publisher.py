"""Publishing the delta log in version order on the broadcast topic (retained), so a
terminal that (re)subscribes gets the newest at once and can tell from its number whether
it missed any (then it catches up over HTTP: :func:`server.downstream.deltas.deltas_since`).
"""

from __future__ import annotations

import logging
import sqlite3

from server.downstream.deltas import current_version, deltas_since
from server.downstream.polling import PollingPublisher, Publish
from server.infra.run_once import Role
from shared.clock import Clock
from shared.protocol import ServerKey, topics

log = logging.getLogger(__name__)


class DeltaPublisher(PollingPublisher):
    """Publishes recorded deltas in version order on the broadcast topic (retained).

    ``poke()`` after a commit that recorded a delta; a timer also polls, so a delta
    recorded by another process (the CLI) goes out too. If the broker is unreachable the
    publisher keeps its place and tries again.

    With a ``role`` (:class:`server.infra.run_once.Role`), it publishes only while its
    process holds that role, so of several server processes on one database exactly one
    publishes; one that takes the role over starts one behind the head, as at a start (a
    terminal that then sees a gap catches up over HTTP).
    """

    _log = log
    _what = "delta publisher"

    def __init__(
        self,
        conn: sqlite3.Connection,
        key: ServerKey,
        publish: Publish,
        clock: Clock,
        poll_s: float = 0.5,
        role: Role | None = None,
    ) -> None:
        self._role = role
        # start one behind the head: republishing the newest refreshes the retained message
        self.published = max(current_version(conn) - 1, 0)
        super().__init__(conn, key, publish, clock, thread_name="delta-publisher", poll_s=poll_s)

    def _stopped(self) -> None:
        if self._role is not None:
            self._role.release()

    def _run(self) -> None:
        # waits first: a delta goes out on the poke after its commit (or the poll)
        while not self._stop.is_set():
            self._wait()
            if self._role is not None and not self._holds_role():
                continue
            self._guarded_round()

    def _round(self) -> None:
        self.publish_pending()

    def _holds_role(self) -> bool:
        assert self._role is not None
        was = self._role.held
        if not self._role.hold():
            return False
        if not was:  # taken over (or first taken): start as a fresh publisher does
            try:
                self.published = max(current_version(self._conn) - 1, 0)
            except sqlite3.Error as exc:
                log.error("delta publisher: database error: %s", exc)
                return False
        return True

    def publish_pending(self) -> int:
        """Publish every delta recorded after the last one published; returns how many.

        A page shorter than asked for is the end of the log as read: the next delta to
        commit comes with its own poke (set after this loop's wait cleared it) or the
        poll, so it is not read again for an empty page (a statement per commit)."""
        sent = 0
        while True:
            batch = deltas_since(self._conn, self.published, limit=_PAGE)
            for delta in batch:
                if not self._send_retained(topics.DELTA, "delta", delta.to_body()):
                    return sent
                self.published = delta.version
                sent += 1
            if len(batch) < _PAGE:
                return sent


_PAGE = 200  # deltas read per statement
