"""Crash points: a crash armed somewhere in a node's code, that goes off at a drawn moment.

A :class:`Fuse` belongs to one node. The fault plan arms it at a named point with a
countdown; the node's code passes the point (``tick``) and the crash fires when the count
runs out, by raising :class:`SimCrash` — a ``BaseException``, so no ``except Exception``
in the real code can swallow it — and the node is then crashed by the simulator.

Inside SQLite the point is the connection's progress handler (:meth:`Fuse.arm_sql`): every
virtual-machine instruction counts down, and at zero the statement running is interrupted
— at any instruction of any statement, mid-transaction or in its commit. From then on
every statement on that connection fails at its first instruction, a ``ROLLBACK`` too (a
dead process runs nothing more, whatever the real code does after catching the error),
until the simulator closes it: what was not committed is rolled back, exactly what a crash
loses. The handler is attached only while armed (a call per instruction costs).
"""

from __future__ import annotations

import contextlib
import sqlite3
import traceback
from collections.abc import Iterator

SQL_TICK = 1  # virtual-machine instructions per countdown step: then nothing runs after a crash


class SimCrash(BaseException):  # noqa: N818 — not an error: the simulated power cut itself
    """The node crashes here (raised by an armed crash point)."""


class Fuse:
    def __init__(self) -> None:
        self.armed: dict[str, int] = {}
        self.fired: str | None = None
        self._sql: dict[str, sqlite3.Connection] = {}  # points armed inside a connection

    def arm(self, point: str, after: int) -> None:
        self.armed[point] = max(1, after)

    def disarm(self) -> None:
        self.armed.clear()

    def tick(self, point: str) -> None:
        """Passing ``point``: crash here if its countdown runs out."""
        left = self.armed.get(point)
        if left is None:
            return
        if left <= 1:
            del self.armed[point]
            self.fired = point
            raise SimCrash(point)
        self.armed[point] = left - 1

    def arm_sql(self, conn: sqlite3.Connection, point: str, after: int) -> None:
        """Arm ``point`` inside this connection's statements, ``after`` instructions from now."""
        self.arm(point, after)
        self._sql[point] = conn
        self.attach(conn, point)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """The simulator's own reads of a node's database (what the audit looks at): not the
        node's code, so they neither advance nor fire a crash point armed inside it."""
        held = [(point, conn) for point, conn in self._sql.items() if point in self.armed or self.fired]
        for _, conn in held:
            self.detach(conn)
        try:
            yield
        finally:
            for point, conn in held:
                self.attach(conn, point)

    def attach(self, conn: sqlite3.Connection, point: str) -> None:
        """Count down at ``point`` inside this connection's statements."""

        def progress() -> int:
            if self.fired is not None:
                return 1
            left = self.armed.get(point)
            if left is None:
                return 0
            if left <= 1:
                del self.armed[point]
                self.fired = point
                return 1
            self.armed[point] = left - 1
            return 0

        conn.set_progress_handler(progress, SQL_TICK)

    def detach(self, conn: sqlite3.Connection) -> None:
        conn.set_progress_handler(None, SQL_TICK)


def crash_site(exc: BaseException, names: tuple[str, ...]) -> str | None:
    """The innermost of ``names`` (function names) on the exception's stack: where it struck."""
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_name in names:
            found = frame.f_code.co_name
    return found
