"""The fleet alert rules, case by case: a terminal's health in, its alerts out
(server/registry/fleet_rules.py). Times are Asia/Shanghai; the canteen serves lunch
11:30–13:30 and dinner 17:30–19:30."""

from __future__ import annotations

from dataclasses import replace

from server.registry.fleet_rules import (
    FleetLimits,
    TerminalHealth,
    alerts_for,
    fleet_alerts,
    in_meal_hours,
    offline_since,
    software_outdated,
)
from shared.clock import ms_from_china

MIN = 60_000
MEALS = ((11 * 60 + 30, 13 * 60 + 30), (17 * 60 + 30, 19 * 60 + 30))
LIMITS = FleetLimits(offline_after_ms=10 * MIN, stale_ms=MIN, min_software="1.4")
LUNCH = ms_from_china("2026-01-06T12:30")
NIGHT = ms_from_china("2026-01-06T23:00")
GB = 1024**3


def healthy(now: int) -> TerminalHealth:
    return TerminalHealth(
        terminal_id="T0001",
        canteen_id="C01",
        state="online",
        state_since_ms=now - 3 * 3600_000,
        last_seen_ms=now - 5_000,
        unsent_sales=0,
        clock_offset_ms=120,
        software="canteen-terminal/1.4.0",
        disk_free_bytes=20 * GB,
        disk_total_bytes=32 * GB,
        journal_bytes=40 * 1024 * 1024,
        meal_minutes=MEALS,
    )


def codes(t: TerminalHealth, now: int, limits: FleetLimits = LIMITS) -> list[str]:
    return [a.code for a in alerts_for(t, now, limits)]


def test_a_healthy_terminal_raises_nothing() -> None:
    assert codes(healthy(LUNCH), LUNCH) == []


def test_offline_past_the_threshold_during_lunch_is_an_alert() -> None:
    t = replace(healthy(LUNCH), state="offline", state_since_ms=LUNCH - 11 * MIN)
    [alert] = alerts_for(t, LUNCH, LIMITS)
    assert alert.code == "terminal_offline" and alert.values["offline_since_ms"] == LUNCH - 11 * MIN
    assert "11 min" in alert.detail


def test_offline_within_the_threshold_is_not_yet_an_alert() -> None:
    t = replace(healthy(LUNCH), state="offline", state_since_ms=LUNCH - 9 * MIN)
    assert codes(t, LUNCH) == []


def test_offline_at_night_is_no_alert() -> None:
    t = replace(healthy(NIGHT), state="offline", state_since_ms=NIGHT - 5 * 3600_000)
    assert codes(t, NIGHT) == []


def test_a_silent_online_terminal_counts_as_offline_from_its_last_heartbeat() -> None:
    """The broker died and sent no will: the retained "online" is stale."""
    t = replace(healthy(LUNCH), last_seen_ms=LUNCH - 15 * MIN)
    assert offline_since(t, LUNCH, LIMITS) == LUNCH - 15 * MIN
    assert codes(t, LUNCH) == ["terminal_offline"]


def test_a_never_seen_terminal_counts_as_offline_since_it_was_provisioned() -> None:
    t = replace(healthy(LUNCH), state="new", last_seen_ms=None, state_since_ms=LUNCH - 20 * MIN)
    assert codes(t, LUNCH) == ["terminal_offline"]


def test_sales_unsent_for_over_an_hour() -> None:
    t = replace(healthy(NIGHT), unsent_sales=3, oldest_unsent_ms=NIGHT - 61 * MIN)
    [alert] = alerts_for(t, NIGHT, LIMITS)
    assert alert.code == "unsent_sales_old" and alert.values["unsent_sales"] == 3
    assert codes(replace(t, oldest_unsent_ms=NIGHT - 59 * MIN), NIGHT) == []
    assert codes(replace(t, unsent_sales=0), NIGHT) == []  # a stale "oldest" with nothing unsent


def test_clock_offset_beyond_the_canteens_limit_either_way() -> None:
    t = healthy(NIGHT)
    assert codes(replace(t, clock_offset_ms=5 * MIN + 1), NIGHT) == ["clock_offset_high"]
    assert codes(replace(t, clock_offset_ms=-(5 * MIN + 1)), NIGHT) == ["clock_offset_high"]
    assert codes(replace(t, clock_offset_ms=5 * MIN), NIGHT) == []
    assert codes(replace(t, clock_offset_ms=20 * MIN, max_clock_offset_ms=30 * MIN), NIGHT) == []


def test_disk_nearly_full_by_ratio_or_by_bytes() -> None:
    t = healthy(NIGHT)
    assert codes(replace(t, disk_free_bytes=int(3.1 * GB)), NIGHT) == ["disk_nearly_full"]  # < 10 % of 32 GB
    assert codes(replace(t, disk_free_bytes=4 * GB), NIGHT) == []
    small = replace(t, disk_total_bytes=1 * GB, disk_free_bytes=150 * 1024 * 1024)  # 15 % but under 200 MB
    assert codes(small, NIGHT) == ["disk_nearly_full"]
    assert codes(replace(t, disk_free_bytes=None), NIGHT) == []  # an older terminal reports none


def test_old_software_version() -> None:
    t = healthy(NIGHT)
    assert codes(replace(t, software="canteen-terminal/1.3.9"), NIGHT) == ["software_outdated"]
    assert codes(replace(t, software="canteen-terminal/1.10"), NIGHT) == []  # versions, not strings
    assert codes(replace(t, software="canteen-terminal/dev"), NIGHT) == []  # unreadable: not judged
    assert codes(replace(t, software="canteen-terminal/1.0"), NIGHT, FleetLimits()) == []  # no minimum set
    assert software_outdated("canteen-terminal/1", "2") and not software_outdated("canteen-terminal/2", "2")


def test_a_revoked_terminal_raises_nothing() -> None:
    t = replace(healthy(LUNCH), state="revoked", state_since_ms=LUNCH - 5 * 3600_000, clock_offset_ms=10**9)
    assert codes(t, LUNCH) == []


def test_several_alerts_at_once_and_across_the_fleet() -> None:
    bad = replace(
        healthy(LUNCH),
        terminal_id="T0002",
        state="offline",
        state_since_ms=LUNCH - 90 * MIN,
        unsent_sales=12,
        oldest_unsent_ms=LUNCH - 80 * MIN,
        clock_offset_ms=-9 * MIN,
        software="canteen-terminal/1.2",
    )
    alerts = fleet_alerts([healthy(LUNCH), bad], LUNCH, LIMITS)
    assert [(a.terminal_id, a.code) for a in alerts] == [
        ("T0002", "terminal_offline"),
        ("T0002", "unsent_sales_old"),
        ("T0002", "clock_offset_high"),
        ("T0002", "software_outdated"),
    ]


def test_meal_hours_edges() -> None:
    assert in_meal_hours(MEALS, ms_from_china("2026-01-06T11:30"))
    assert not in_meal_hours(MEALS, ms_from_china("2026-01-06T13:30"))  # the end is exclusive
    assert not in_meal_hours((), LUNCH)  # a canteen without meal times: never "meal hours"
