"""Update reports on their way to the server, each sent until the server acknowledges it.

A report (:class:`~shared.protocol.UpdateReport`) is queued once per (kind, version, state,
code) in a process; :meth:`ReportQueue.send_due` publishes those not yet acknowledged every
``retry_s`` (a new message id each time; an ack of any of them counts), and
:meth:`ReportQueue.answered` matches the server's ack. A report may carry an ``on_ack``
action (a new version's ``running`` report: the ack confirms it); actions are handed back
by :meth:`ReportQueue.take_actions` to run on the updater's own thread, not the sync thread
the ack arrived on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.protocol import UpdateReport

Send = Callable[[UpdateReport], str | None]  # the message id, or None when not sent (offline)


@dataclass
class _Outgoing:
    report: UpdateReport
    on_ack: Callable[[], None] | None
    msg_ids: set[str] = field(default_factory=set)
    sent_at: float = float("-inf")


class ReportQueue:
    def __init__(self, send: Send, monotonic: Callable[[], float], retry_s: float = 5.0) -> None:
        self._send = send
        self._mono = monotonic
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._outgoing: list[_Outgoing] = []
        self._queued: set[tuple[str, str, str, str | None]] = set()
        self._actions: list[Callable[[], None]] = []

    def add(self, report: UpdateReport, on_ack: Callable[[], None] | None = None) -> bool:
        """Queue a report; False if the same one was queued before (it is not repeated)."""
        key = (report.kind, report.version, report.state, report.code)
        with self._lock:
            if key in self._queued:
                return False
            self._queued.add(key)
            self._outgoing.append(_Outgoing(report, on_ack))
        return True

    def send_due(self) -> None:
        now = self._mono()
        with self._lock:
            due = [o for o in self._outgoing if now - o.sent_at >= self.retry_s]
        for out in due:
            msg_id = self._send(out.report)
            if msg_id is not None:
                with self._lock:
                    out.msg_ids.add(msg_id)
                    out.sent_at = now

    def answered(self, msg_id: str, refused: bool) -> UpdateReport | None:
        """The server answered ``msg_id``: the report it answered (no longer sent), or None
        when it was not one of ours. A refused report's action is dropped."""
        with self._lock:
            out = next((o for o in self._outgoing if msg_id in o.msg_ids), None)
            if out is None:
                return None
            self._outgoing.remove(out)
            if not refused and out.on_ack is not None:
                self._actions.append(out.on_ack)
        return out.report

    def take_actions(self) -> list[Callable[[], None]]:
        with self._lock:
            actions, self._actions = self._actions, []
        return actions

    def unanswered(self) -> list[UpdateReport]:
        with self._lock:
            return [o.report for o in self._outgoing]
