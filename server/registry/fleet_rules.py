"""Fleet alerts as plain functions: one terminal's health in, a list of alerts out.

Each alert has a stable code (texts in :mod:`shared.errors`):

* ``terminal_offline`` — offline (or silent: no heartbeat for ``stale_ms``) longer than
  ``offline_after_ms`` while its canteen is serving a meal (Asia/Shanghai). Outside meal
  hours a terminal may well be switched off.
* ``unsent_sales_old`` — it holds a sale unsent for longer than ``unsent_age_ms`` (an hour).
* ``clock_offset_high`` — its clock is further from the server's than the canteen's
  ``max_clock_offset_ms`` (it then refuses offline sales).
* ``disk_nearly_full`` — less than ``disk_free_min_ratio`` of its disk, or less than
  ``disk_free_min_bytes``, is free.
* ``software_outdated`` — it reports a software version below ``min_software``.

No clock, database or logging here: :mod:`server.registry.fleet` gathers the inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from shared.clock import china_datetime

MINUTE_MS = 60_000


@dataclass(frozen=True)
class FleetLimits:
    offline_after_ms: int = 10 * MINUTE_MS
    stale_ms: int = MINUTE_MS  # a heartbeat older than this: the terminal is not online
    unsent_age_ms: int = 60 * MINUTE_MS
    disk_free_min_ratio: float = 0.10
    disk_free_min_bytes: int = 200 * 1024 * 1024
    min_software: str = ""  # "": no version check


@dataclass(frozen=True)
class TerminalHealth:
    """What the server knows of one terminal. Times are the server's (ms); the terminal's
    own times are corrected by its reported clock offset before they get here."""

    terminal_id: str
    canteen_id: str
    state: str  # as last reported: online | offline | new (never reported) | revoked
    state_since_ms: int | None = None
    last_seen_ms: int | None = None  # the last heartbeat's arrival
    unsent_sales: int | None = None
    oldest_unsent_ms: int | None = None
    last_sync_ms: int | None = None
    clock_offset_ms: int | None = None
    max_clock_offset_ms: int = 5 * MINUTE_MS
    software: str = ""
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    journal_bytes: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None
    rotation_started_ms: int | None = None
    # the canteen's meal periods as (first, last) minute of the day, Asia/Shanghai
    meal_minutes: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("meal_minutes")
        return d


@dataclass(frozen=True)
class Alert:
    code: str
    terminal_id: str
    canteen_id: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def online_now(t: TerminalHealth, now_ms: int, limits: FleetLimits) -> bool:
    """Reported online and heard from within ``stale_ms`` (a dead broker sends no will)."""
    return t.state == "online" and t.last_seen_ms is not None and now_ms - t.last_seen_ms <= limits.stale_ms


def offline_since(t: TerminalHealth, now_ms: int, limits: FleetLimits) -> int | None:
    """Since when a terminal in service has been offline (None: online, or revoked)."""
    if t.state == "revoked" or online_now(t, now_ms, limits):
        return None
    if t.state == "online":  # silent: offline from its last heartbeat
        return t.last_seen_ms
    return t.state_since_ms


def in_meal_hours(meal_minutes: tuple[tuple[int, int], ...], now_ms: int) -> bool:
    local = china_datetime(now_ms)
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in meal_minutes)


def _version(text: str) -> Version | None:
    try:
        return Version(text.rsplit("/", 1)[-1])
    except InvalidVersion:
        return None


def software_outdated(software: str, min_software: str) -> bool:
    """A reported version below the minimum; an unreadable one is not judged."""
    if not min_software:
        return False
    have, least = _version(software), _version(min_software)
    return have is not None and least is not None and have < least


def alerts_for(t: TerminalHealth, now_ms: int, limits: FleetLimits) -> list[Alert]:
    """The alerts one terminal raises now (none for a revoked terminal)."""
    if t.state == "revoked":
        return []
    out: list[Alert] = []

    def alert(code: str, detail: str, **values: Any) -> None:
        out.append(Alert(code, t.terminal_id, t.canteen_id, detail, values))

    since = offline_since(t, now_ms, limits)
    if (
        since is not None
        and now_ms - since > limits.offline_after_ms
        and in_meal_hours(t.meal_minutes, now_ms)
    ):
        minutes = (now_ms - since) // MINUTE_MS
        alert("terminal_offline", f"offline for {minutes} min during meal hours", offline_since_ms=since)
    if (
        t.oldest_unsent_ms is not None
        and t.unsent_sales
        and now_ms - t.oldest_unsent_ms > limits.unsent_age_ms
    ):
        minutes = (now_ms - t.oldest_unsent_ms) // MINUTE_MS
        alert(
            "unsent_sales_old",
            f"{t.unsent_sales} unsent sale(s), the oldest {minutes} min old",
            unsent_sales=t.unsent_sales,
            oldest_unsent_ms=t.oldest_unsent_ms,
        )
    if t.clock_offset_ms is not None and abs(t.clock_offset_ms) > t.max_clock_offset_ms:
        alert(
            "clock_offset_high",
            f"clock {t.clock_offset_ms:+d} ms from the server's (limit {t.max_clock_offset_ms} ms)",
            clock_offset_ms=t.clock_offset_ms,
        )
    if t.disk_free_bytes is not None and t.disk_total_bytes:
        if (
            t.disk_free_bytes < limits.disk_free_min_bytes
            or t.disk_free_bytes / t.disk_total_bytes < limits.disk_free_min_ratio
        ):
            alert(
                "disk_nearly_full",
                f"{t.disk_free_bytes // (1024 * 1024)} MB free of {t.disk_total_bytes // (1024 * 1024)} MB",
                disk_free_bytes=t.disk_free_bytes,
            )
    if software_outdated(t.software, limits.min_software):
        alert(
            "software_outdated",
            f"runs {t.software}, the minimum is {limits.min_software}",
            software=t.software,
        )
    return out


def fleet_alerts(fleet: list[TerminalHealth], now_ms: int, limits: FleetLimits) -> list[Alert]:
    return [a for t in fleet for a in alerts_for(t, now_ms, limits)]
