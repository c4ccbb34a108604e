"""A canteen's rules and the city's risk limits, parsed from the cached config.

The server pushes each canteen's config as JSON (``meals``, ``meal_limit``, ``items``,
``allow_uid_only``) and the city-wide terminal ``settings`` (``risk``); this module turns
them into typed, validated values for :func:`terminal.authorize.authorize`. Times of day
are minutes after midnight, Asia/Shanghai.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.clock import china_datetime

HOUR_MS = 3_600_000


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True)
class MealPeriod:
    name: str
    start_min: int
    end_min: int  # exclusive
    price_fen: int
    visitor_price_fen: int | None = None

    def contains(self, minute_of_day: int) -> bool:
        return self.start_min <= minute_of_day < self.end_min


@dataclass(frozen=True)
class ShopItem:
    sku: str
    name: str
    price_fen: int
    reference_price_fen: int | None


@dataclass(frozen=True)
class CanteenRules:
    canteen_id: str
    unit_id: str
    meals: tuple[MealPeriod, ...] = ()
    meal_limit: int = 1
    items: dict[str, ShopItem] = field(default_factory=dict)
    allow_uid_only: bool = True

    @classmethod
    def from_config(cls, canteen_id: str, config: dict[str, Any]) -> CanteenRules:
        meals = []
        for name, m in (config.get("meals") or {}).items():
            meals.append(
                MealPeriod(
                    name=name,
                    start_min=_minutes(m["start"]),
                    end_min=_minutes(m["end"]),
                    price_fen=int(m["price_fen"]),
                    visitor_price_fen=m.get("visitor_price_fen"),
                )
            )
        items = {
            sku: ShopItem(sku, i.get("name", sku), int(i["price_fen"]), i.get("reference_price_fen"))
            for sku, i in (config.get("items") or {}).items()
        }
        return cls(
            canteen_id=canteen_id,
            unit_id=config.get("unit_id", ""),
            meals=tuple(sorted(meals, key=lambda p: p.start_min)),
            meal_limit=int(config.get("meal_limit", 1)),
            items=items,
            allow_uid_only=bool(config.get("allow_uid_only", True)),
        )

    def period_at(self, now_ms: int) -> MealPeriod | None:
        dt = china_datetime(now_ms)
        minute = dt.hour * 60 + dt.minute
        for p in self.meals:
            if p.contains(minute):
                return p
        return None


@dataclass(frozen=True)
class RiskLimits:
    """Offline limits (per canteen or city-wide). Amounts in fen, ages in milliseconds."""

    max_sale_fen: int = 10_000
    max_offline_total_fen: int = 20_000  # per card, beyond its last confirmed balance check
    max_offline_sales: int = 6  # consecutive unconfirmed sales per card at this terminal
    max_offline_age_ms: int = 24 * HOUR_MS  # terminal offline longer than this: stop
    max_unsent_sales: int = 20_000
    max_denylist_age_ms: int = 72 * HOUR_MS
    max_clock_offset_ms: int = 5 * 60_000

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> RiskLimits:
        if not config:
            return cls()
        known = {k: int(v) for k, v in config.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def start_of_day_ms(now_ms: int) -> int:
    dt = china_datetime(now_ms)
    midnight = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp() * 1000)
