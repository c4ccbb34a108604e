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
ALL_UPDATE_REPORTS = f"{PREFIX}/t/+/up/update"
ALL_REVERSALS = f"{PREFIX}/t/+/up/reversals"  # reversals (冲正), their own outbox and topic


def _check(terminal_id: str) -> str:
    return check_terminal_id(terminal_id)


def sales(terminal_id: str) -> str:
    return f"{PREFIX}/t/{_check(terminal_id)}/up/sales"


def reversals(terminal_id: str) -> str:
    return f"{PREFIX}/t/{_check(terminal_id)}/up/reversals"


def status(terminal_id: str) -> str:
    return f"{PREFIX}/t/{_check(terminal_id)}/up/status"


def ack(terminal_id: str) -> str:
    return f"{PREFIX}/t/{_check(terminal_id)}/down/ack"


def update_offer(terminal_id: str) -> str:
    """The bundles offered to one terminal (retained, server-signed): shared.protocol.updates."""
    return f"{PREFIX}/t/{_check(terminal_id)}/down/update"


def update_report(terminal_id: str) -> str:
    """What a terminal made of an offered bundle (installed, running, refused …)."""
    return f"{PREFIX}/t/{_check(terminal_id)}/up/update"


def backup(terminal_id: str) -> str:
    """The server's backup mark for one terminal (retained, Ed25519-signed): how far its
    journal may be pruned, and after a restore which sales to send again
    (:mod:`shared.protocol.backup_mark`)."""
    return f"{PREFIX}/t/{_check(terminal_id)}/down/backup"


def rekey(terminal_id: str) -> str:
    """The server's offer of a terminal's next key (retained; :mod:`shared.protocol.rekey`)."""
    return f"{PREFIX}/t/{_check(terminal_id)}/down/rekey"


def terminal_of(topic: str) -> str | None:
    """The terminal id in a per-terminal topic, or None if the topic is not one (nor a
    usable terminal id)."""
    parts = topic.split("/")
    if len(parts) == 6 and "/".join(parts[:2]) == PREFIX and parts[2] == "t":
        return parts[3] if TERMINAL_ID.fullmatch(parts[3]) else None
    return None
