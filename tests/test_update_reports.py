"""Update reports reach the server: sent again until it answers, each answered once."""

from __future__ import annotations

from shared.protocol import UpdateReport
from terminal.update_reports import ReportQueue

RUNNING = UpdateReport("terminal", "2.0", "running", "2.0")


class Wire:
    """The MQTT link as the updater sees it: offline (None) or a message id per send."""

    def __init__(self) -> None:
        self.online = False
        self.sent: list[tuple[str, UpdateReport]] = []

    def __call__(self, report: UpdateReport) -> str | None:
        if not self.online:
            return None
        msg_id = f"m{len(self.sent) + 1}"
        self.sent.append((msg_id, report))
        return msg_id


def test_a_report_is_sent_again_until_the_server_answers_any_copy() -> None:
    wire, now = Wire(), [0.0]
    queue = ReportQueue(wire, lambda: now[0], retry_s=5)
    confirmed: list[str] = []
    assert queue.add(RUNNING, lambda: confirmed.append("2.0"))
    assert not queue.add(RUNNING)  # the same report is not queued twice
    queue.send_due()
    assert wire.sent == []  # offline: nothing went, nothing counted as sent
    wire.online = True
    queue.send_due()
    now[0] = 2
    queue.send_due()  # not due yet
    now[0] = 6
    queue.send_due()  # due again: a second copy
    assert [m for m, _ in wire.sent] == ["m1", "m2"]
    assert queue.answered("m1", refused=False) == RUNNING  # the first copy's answer counts
    assert queue.answered("m2", refused=False) is None  # … once
    assert queue.answered("x", refused=False) is None  # not ours: a sale batch's ack
    assert confirmed == []  # actions run on the updater's thread, when it takes them
    for action in queue.take_actions():
        action()
    assert confirmed == ["2.0"] and queue.unanswered() == []
    now[0] = 20
    queue.send_due()
    assert len(wire.sent) == 2


def test_a_refused_report_runs_no_action() -> None:
    wire = Wire()
    wire.online = True
    queue = ReportQueue(wire, lambda: 0.0)
    confirmed: list[str] = []
    queue.add(RUNNING, lambda: confirmed.append("2.0"))
    queue.send_due()
    assert queue.answered("m1", refused=True) == RUNNING
    assert queue.take_actions() == [] and confirmed == []
