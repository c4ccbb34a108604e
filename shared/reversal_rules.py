"""The reversal (冲正) rules both sides apply: the window and the offline bounds. Pure.

An operator may reverse a sale of their own terminal (a wrong item, a diner charged twice, a
meal not served) within a **window** after the sale — ``reversal_window_minutes`` in the
canteen's config, default :data:`DEFAULT_WINDOW_MINUTES`, 0 turns reversals off — and only
on the **same business day** (Asia/Shanghai). The terminal checks it before it reverses; the
server checks it again against the sale it applied (it trusts no terminal's word), with the
same function, :func:`window_refusal`.

Offline, a terminal's reversals are bounded per day by the risk limits
``max_offline_reversals`` and ``max_offline_reversal_fen`` (:class:`shared.risk_limits.RiskLimits`):
:func:`offline_refusal` is that rule, for the terminal before it reverses and for the server
when the reversal arrives.
"""

from __future__ import annotations

from typing import Any

from shared.clock import china_datetime
from shared.risk_limits import MINUTE_MS, RiskLimits

DEFAULT_WINDOW_MINUTES = 10
MAX_WINDOW_MINUTES = 24 * 60


def window_minutes(config: dict[str, Any] | None) -> int:
    """The canteen's reversal window in minutes (a missing or malformed value: the default)."""
    value = (config or {}).get("reversal_window_minutes", DEFAULT_WINDOW_MINUTES)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_WINDOW_MINUTES:
        return DEFAULT_WINDOW_MINUTES
    return value


def window_ms(config: dict[str, Any] | None) -> int:
    return window_minutes(config) * MINUTE_MS


def window_refusal(sale_at_ms: int, reversal_at_ms: int, window_ms_: int) -> str | None:
    """Why a reversal at ``reversal_at_ms`` of a sale made at ``sale_at_ms`` is not allowed
    (an error code), or None: within the window and on the sale's business day."""
    if window_ms_ <= 0:
        return "reversal_disabled"
    if reversal_at_ms < sale_at_ms:
        return "reversal_before_sale"
    if reversal_at_ms - sale_at_ms > window_ms_:
        return "reversal_outside_window"
    if china_datetime(reversal_at_ms).date() != china_datetime(sale_at_ms).date():
        return "reversal_other_day"
    return None


def offline_refusal(count_today: int, fen_today: int, amount_fen: int, limits: RiskLimits) -> str | None:
    """Why one more offline reversal of ``amount_fen`` by a terminal that has already made
    ``count_today`` of them worth ``fen_today`` today is refused, or None."""
    if count_today + 1 > limits.max_offline_reversals:
        return "reversal_offline_limit"
    if fen_today + amount_fen > limits.max_offline_reversal_fen:
        return "reversal_offline_limit"
    return None
