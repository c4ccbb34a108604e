"""The fleet view: per terminal, what its last heartbeat said and what the server saw.

:func:`health` reads the terminals table (the last status each terminal sent, stored by
:func:`server.registry.terminals.record_status`, with when its state last changed and when
it was last heard by the server's clock), the canteens' meal hours and risk limits, and
returns one :class:`~server.registry.fleet_rules.TerminalHealth` per terminal; the alert
rules themselves are in :mod:`server.registry.fleet_rules`. :func:`report` is what
``canteen-server fleet`` prints and ``GET /api/v1/fleet`` serves.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from server.registry.canteen_config import minutes
from server.registry.fleet_rules import (
    FleetLimits,
    TerminalHealth,
    fleet_alerts,
    offline_since,
    online_now,
)
from shared.errors import DomainError
from shared.risk_limits import RiskLimits


def limits_from_config(config: Mapping[str, Any]) -> FleetLimits:
    """The alert thresholds from the server's configuration (``FLEET_*``)."""
    return FleetLimits(
        offline_after_ms=int(config.get("FLEET_OFFLINE_ALERT_S", 600)) * 1000,
        stale_ms=int(config.get("FLEET_STALE_S", 60)) * 1000,
        min_software=str(config.get("FLEET_MIN_SOFTWARE") or ""),
    )


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _meal_minutes(config: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    meals = config.get("meals") or {}
    spans = []
    for meal in meals.values() if isinstance(meals, dict) else ():
        try:
            spans.append((minutes(meal["start"]), minutes(meal["end"])))
        except (KeyError, TypeError, ValueError, DomainError):
            continue  # a canteen config is validated when set; an odd old one is skipped
    return tuple(sorted(spans))


def health(conn: sqlite3.Connection) -> list[TerminalHealth]:
    """Every terminal's health as the server knows it, by terminal id."""
    settings = conn.execute("SELECT value FROM settings WHERE key = 'terminal_settings'").fetchone()
    city_risk = _json(settings[0] if settings else None).get("risk")
    canteens = {r[0]: _json(r[1]) for r in conn.execute("SELECT id, config_json FROM canteens")}
    out = []
    for r in conn.execute(
        "SELECT id, canteen_id, state, state_since_ms, last_seen_ms, last_status_json, created_at_ms, "
        "rotation_started_ms FROM terminals ORDER BY id"
    ):
        status = _json(r[5])
        offset = status.get("clock_offset_ms")
        shift = offset if isinstance(offset, int) else 0  # terminal clock → server clock

        def at(key: str, status: dict[str, Any] = status, shift: int = shift) -> int | None:
            v = status.get(key)
            return v + shift if isinstance(v, int) else None

        canteen = canteens.get(r[1], {})
        out.append(
            TerminalHealth(
                terminal_id=r[0],
                canteen_id=r[1],
                state=r[2],
                state_since_ms=r[3] if r[3] is not None else (r[6] if r[2] == "new" else None),
                last_seen_ms=r[4],
                unsent_sales=status.get("pending"),
                oldest_unsent_ms=at("oldest_unsent_ms"),
                last_sync_ms=at("last_sync_ms"),
                clock_offset_ms=offset if isinstance(offset, int) else None,
                max_clock_offset_ms=RiskLimits.from_config(
                    city_risk, canteen.get("risk")
                ).max_clock_offset_ms,
                software=str(status.get("software") or ""),
                disk_free_bytes=status.get("disk_free_bytes"),
                disk_total_bytes=status.get("disk_total_bytes"),
                journal_bytes=status.get("journal_bytes"),
                last_error=status.get("last_error") or status.get("sync_fault"),
                last_error_ms=at("last_error_ms"),
                rotation_started_ms=r[7],
                meal_minutes=_meal_minutes(canteen),
            )
        )
    return out


def report(conn: sqlite3.Connection, now_ms: int, limits: FleetLimits) -> dict[str, Any]:
    """The fleet and its alerts, as JSON: each terminal with its effective state (``online``
    only when heard within ``stale_ms``) and since when."""
    fleet = health(conn)
    rows = []
    for t in fleet:
        row = t.to_json()
        online = online_now(t, now_ms, limits)
        row["online"] = online
        row["status"] = "revoked" if t.state == "revoked" else ("online" if online else "offline")
        row["since_ms"] = offline_since(t, now_ms, limits) if not online else t.state_since_ms
        rows.append(row)
    alerts = fleet_alerts(fleet, now_ms, limits)
    return {
        "now_ms": now_ms,
        "terminals": rows,
        "online": sum(1 for r in rows if r["online"]),
        "alerts": [a.to_json() for a in alerts],
    }
