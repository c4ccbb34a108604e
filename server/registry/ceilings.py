"""Operation ceilings and the refund second-approval window: server settings with defaults.

Each is one row of ``settings`` (an integer as text), read when it is needed, so an
administrator changes it with ``canteen-server limits set`` and the next request obeys:

* ``max_topup_fen`` — one self top-up (default ¥5,000);
* ``max_allocation_per_person_fen`` — one quarter's allocation per person (default ¥3,000);
* ``refund_second_approval_days`` — a leaver's refund to a bank account changed within
  this many days needs two administrators (default 30; see :mod:`server.registry.leavers`).

Above a ceiling a request is refused (``amount_above_ceiling``) and changes nothing.
"""

from __future__ import annotations

import sqlite3

from server.infra.db import get_setting, set_setting
from shared.amounts import FEN_MAX
from shared.errors import DomainError
from shared.money import format_fen

DEFAULTS: dict[str, int] = {
    "max_topup_fen": 500_000,
    "max_allocation_per_person_fen": 300_000,
    "refund_second_approval_days": 30,
}
# the largest value each may be set to
_LIMITS: dict[str, int] = {
    "max_topup_fen": FEN_MAX,
    "max_allocation_per_person_fen": FEN_MAX,
    "refund_second_approval_days": 3660,
}


def get(conn: sqlite3.Connection, key: str) -> int:
    """The setting's value (its default when never set)."""
    raw = get_setting(conn, key)
    if raw is None:
        return DEFAULTS[key]
    try:
        return int(raw)
    except ValueError:
        return DEFAULTS[key]  # not reachable through set(); a hand-edited row falls back


def all_values(conn: sqlite3.Connection) -> dict[str, int]:
    return {key: get(conn, key) for key in DEFAULTS}


def set_value(conn: sqlite3.Connection, key: str, value: int) -> int:
    """Change one setting; call inside a write txn."""
    if key not in DEFAULTS:
        raise DomainError(
            "invalid_input",
            f"unknown setting {key!r}; known: {', '.join(DEFAULTS)}",
            zh=f"没有名为 {key} 的限额设置（可用：{'、'.join(DEFAULTS)}）",
        )
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _LIMITS[key]:
        raise DomainError(
            "invalid_input",
            f"{key} must be a whole number in 0..{_LIMITS[key]}",
            zh=f"{key} 须为 0 到 {_LIMITS[key]} 之间的整数",
        )
    set_setting(conn, key, str(value))
    return value


def check(conn: sqlite3.Connection, key: str, amount_fen: int, what: str) -> None:
    """Refuse ``amount_fen`` above the ceiling ``key`` (``amount_above_ceiling``)."""
    ceiling = get(conn, key)
    if amount_fen > ceiling:
        raise DomainError(
            "amount_above_ceiling",
            f"{what} {format_fen(amount_fen)} is above the ceiling {format_fen(ceiling)} ({key})",
            ceiling_fen=ceiling,
        )
