"""The risk limits the server pushes to terminals, and their safe defaults: one definition
for both sides. The terminal bounds what it approves by them (:mod:`terminal.authorize`);
the server checks every incoming sale against the same values
(:mod:`server.sales.plausibility`), so a terminal cannot exceed a limit it was given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


@dataclass(frozen=True)
class RiskLimits:
    """Offline risk limits, pushed by the server (city ``settings.risk``, overridden per
    canteen by ``config.risk``). Amounts in fen, ages in milliseconds.

    They bound what one terminal can approve while it cannot reach the server:

    * ``max_sale_fen`` — any single sale (online too).
    * ``offline_allowance_fen`` — how far below zero an offline sale may take a card's
      *available* balance (last server-confirmed balance − this terminal's unconfirmed
      sales). 0 (the default) means never: offline, a card can only spend what the
      server last said it had. Online the allowance is 0 whatever is configured.
    * ``max_offline_total_fen`` / ``max_offline_sales`` — per card, the total and the
      number of this terminal's sales since the server last confirmed its balance.
    * ``max_offline_age_ms`` — a terminal offline longer than this stops selling.
    * ``max_unsent_sales`` — a terminal holding this many unsent sales stops selling.
    * ``max_denylist_age_ms`` — the deny-list (card statuses, blocked holders) must have
      been confirmed current by the server within this time.
    * ``max_clock_offset_ms`` — a terminal whose clock is further than this from the
      server's refuses offline sales rather than misdate them.
    * ``max_price_age_ms`` — the shop's price list (the cached canteen config) must have
      been confirmed current within this time, or a basket priced from it is refused
      (``price_list_stale``); meals and typed amounts are not priced from it.
    * ``max_offline_reversals`` / ``max_offline_reversal_fen`` — per terminal and business
      day, how many reversals (冲正) it may make offline and for how much in all
      (:mod:`shared.reversal_rules`); online reversals are bounded by the window only.

    Across ``n`` terminals cut off at once, a card can be overdrawn by at most
    ``n × min(max_offline_total_fen, max_offline_sales × max_sale_fen)`` beyond its
    balance; the server records it as a negative self purse and blocks the card.
    """

    max_sale_fen: int = 10_000
    offline_allowance_fen: int = 0
    max_offline_total_fen: int = 20_000
    max_offline_sales: int = 6
    max_offline_age_ms: int = 24 * HOUR_MS
    max_unsent_sales: int = 20_000
    max_denylist_age_ms: int = 72 * HOUR_MS
    max_clock_offset_ms: int = 5 * MINUTE_MS
    max_price_age_ms: int = 24 * HOUR_MS
    max_offline_reversals: int = 3
    max_offline_reversal_fen: int = 10_000

    @classmethod
    def from_config(cls, *configs: dict[str, Any] | None) -> RiskLimits:
        """Later configs override earlier ones; a malformed value keeps the default."""
        known = cls.__dataclass_fields__  # a dict: fields() builds a tuple on every call
        values: dict[str, int] = {}
        for config in configs:
            if config:
                for k, v in config.items():
                    if k in known and isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                        values[k] = v
        return cls(**values)
