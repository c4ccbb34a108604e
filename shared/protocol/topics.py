"""MQTT topic names of protocol v1. One function per topic; nobody formats topics by hand.

Terminal-specific topics sit under ``canteen/v1/t/<terminal_id>/``; a broker ACL lets each
terminal's credentials publish only to its own ``up/#`` and read only its own ``down/#``
plus the broadcasts ``canteen/v1/down/delta`` and ``canteen/v1/down/server``.
"""

from __future__ import annotations

from shared.protocol.codec import TERMINAL_ID, check_terminal_id

PREFIX = "canteen/v1"
DELTA = f"{PREFIX}/down/delta"
# the server's presence, retained: "online" on connect and every few seconds, "offline" as
# its last will — a terminal whose broker is up but whose server is not uses offline limits
SERVER = f"{PREFIX}/down/server"
ALL_SALES = f"{PREFIX}/t/+/up/sales"
ALL_STATUS = f"{PREFIX}/t/+/up/status"


def _check(terminal_id: str) -> str:
    return check_terminal_id(terminal_id)


def sales(terminal_id: str) -> str:
    return f"{PREFIX}/t/{_check(terminal_id)}/up/sales"


def status(terminal_id: str) -> str:
    return f"{PREFIX}/t/{_check(terminal_id)}/up/status"


def ack(terminal_id: str) -> str:
    return f"{PREFIX}/t/{_check(terminal_id)}/down/ack"


def terminal_of(topic: str) -> str | None:
    """The terminal id in a per-terminal topic, or None if the topic is not one (nor a
    usable terminal id)."""
    parts = topic.split("/")
    if len(parts) == 6 and "/".join(parts[:2]) == PREFIX and parts[2] == "t":
        return parts[3] if TERMINAL_ID.fullmatch(parts[3]) else None
    return None
