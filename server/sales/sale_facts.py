"""Reading what :func:`server.sales.plausibility.check_sale` needs, inside the apply txn.

The canteen configs and city-wide settings come from ``config_history`` (every version
terminals were sent, with the time it was recorded; see schema migration 10), falling back
to the current ones for a database whose history does not reach back. One
:class:`FactsBook` lives as long as one write transaction and caches what it read: a batch
of a thousand sales from one canteen reads its history once.
"""

from __future__ import annotations

import bisect
import functools
import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from server.infra.db import chunks
from server.registry.pins import get_approval
from server.sales.plausibility import SaleFacts, in_force, sale_window
from shared.protocol import Sale
from shared.risk_limits import RiskLimits

_History = tuple[list[int], list[dict[str, Any]]]  # (since_ms ascending, configs)
_SETTINGS_KEY = "terminal_settings"  # the settings row of the city-wide terminal settings


class FactsBook:
    def __init__(self, conn: sqlite3.Connection, now_ms: int) -> None:
        self.conn = conn
        self.now_ms = now_ms
        self._settings: _History | None = None
        self._canteens: dict[str, _History] = {}
        self._terminals: dict[str, int] = {}
        self._latest: dict[str, RiskLimits] = {}  # canteen → the limits in force now
        self._combined: dict[
            tuple[str, int, int, int, int], tuple[tuple[dict[str, Any], ...], tuple[RiskLimits, ...]]
        ] = {}

    def facts(self, sale: Sale, holder_unit_id: str | None) -> SaleFacts:
        settings = self._settings_history()
        canteen = self._canteen_history(sale.canteen_id)
        latest = self._latest.get(sale.canteen_id)
        if latest is None:  # the histories are read once per book: so are the latest limits
            latest = self._latest[sale.canteen_id] = RiskLimits.from_config(
                (settings[1][-1] if settings[1] else {}).get("risk"),
                (canteen[1][-1] if canteen[1] else {}).get("risk"),
            )
        lo, hi = sale_window(sale.occurred_at_ms, latest)
        s_range, c_range = in_force(settings[0], lo, hi), in_force(canteen[0], lo, hi)
        key = (sale.canteen_id, s_range.start, s_range.stop, c_range.start, c_range.stop)
        combined = self._combined.get(key)
        if combined is None:
            setting_versions = [settings[1][i] for i in s_range] or [{}]
            canteen_versions = tuple(canteen[1][i] for i in c_range)
            limits = tuple(
                {
                    RiskLimits.from_config(s.get("risk"), c.get("risk"))
                    for s in setting_versions
                    for c in canteen_versions or ({},)
                }
            )
            combined = self._combined[key] = (canteen_versions, limits)
        return SaleFacts(
            canteens=combined[0],
            limits=combined[1],
            terminal_since_ms=self._terminal_since(sale.terminal_id),
            now_ms=self.now_ms,
            holder_unit_id=holder_unit_id,
            pin_approval=get_approval(self.conn, sale.pin_approval) if sale.pin_approval else None,
        )

    def _settings_history(self) -> _History:
        if self._settings is None:
            row = self.conn.execute(f"SELECT value FROM settings WHERE key = '{_SETTINGS_KEY}'").fetchone()
            self._settings = _settings_from(self._history("settings", ""), row)
        return self._settings

    def know_terminals(self, created_at_ms: dict[str, int]) -> None:
        """Terminals' creation times the caller has read in this transaction (the ingest
        worker's one read of its terminals): not read again by :meth:`prefetch`."""
        for terminal_id, since in created_at_ms.items():
            self._terminals[terminal_id] = int(since)

    def prefetch(self, terminal_ids: Iterable[str], canteen_ids: Iterable[str]) -> None:
        """Read these terminals' and canteens' facts in a few queries, not a few each (the
        ingest batch: on PostgreSQL every query is a round trip); the rest is read on use."""
        for chunk in chunks(sorted(set(terminal_ids) - self._terminals.keys())):
            self._terminals.update(dict.fromkeys(chunk, 0))
            marks = ", ".join("?" * len(chunk))
            for terminal_id, since in self.conn.execute(
                f"SELECT id, created_at_ms FROM terminals WHERE id IN ({marks})", chunk
            ):
                self._terminals[terminal_id] = int(since)
        for chunk in chunks(sorted(set(canteen_ids) - self._canteens.keys())):
            self._read_configs(chunk, with_settings=self._settings is None)

    def _read_configs(self, canteen_ids: list[str], *, with_settings: bool) -> None:
        """These canteens' configs and histories, and (``with_settings``) the city-wide
        settings' in the same query: one round trip per ingest transaction, not four. A
        current config's row has no kind (NULL); a history row has its kind and time, the
        history in (kind, canteen, time, version) order."""
        marks = ", ".join("?" * len(canteen_ids))
        then_parts = [f"(kind = 'canteen' AND canteen_id IN ({marks}))"]
        if with_settings:  # its row has no canteen id (canteens' ids are never NULL)
            then_parts.append("(kind = 'settings' AND canteen_id = '')")
        # the history first: its typed columns type the NULLs of the rest (PostgreSQL)
        parts = [
            "SELECT kind, canteen_id, NULL, at_ms, version, config_json FROM config_history "
            f"WHERE {' OR '.join(then_parts)}",
            f"SELECT NULL, id, unit_id, NULL, NULL, config_json FROM canteens WHERE id IN ({marks})",
        ]
        if with_settings:
            parts.append(
                f"SELECT NULL, NULL, NULL, NULL, NULL, value FROM settings WHERE key = '{_SETTINGS_KEY}'"
            )
        current: dict[str, dict[str, Any]] = {}
        settings_row = None
        rows: dict[str, list[Any]] = {c: [] for c in canteen_ids}
        settings_rows: list[Any] = []
        for kind, canteen_id, unit_id, at_ms, _version, config_json in self.conn.execute(
            " UNION ALL ".join(parts) + " ORDER BY 1, 2, 4, 5", [*canteen_ids, *canteen_ids]
        ):
            if kind is None:
                if canteen_id is None:
                    settings_row = (config_json,)
                else:
                    current[canteen_id] = {**_as_dict(config_json), "unit_id": unit_id}
            else:
                (settings_rows if kind == "settings" else rows[canteen_id]).append((at_ms, config_json))
        for c in canteen_ids:
            self._canteens[c] = _with_current(_as_history(rows[c]), current.get(c))
        if with_settings:
            self._settings = _settings_from(_as_history(settings_rows), settings_row)

    def _canteen_history(self, canteen_id: str) -> _History:
        if canteen_id not in self._canteens:
            self.prefetch((), (canteen_id,))
        return self._canteens[canteen_id]

    def _history(self, kind: str, canteen_id: str) -> _History:
        rows = self.conn.execute(
            "SELECT at_ms, config_json FROM config_history WHERE kind = ? AND canteen_id = ? "
            "ORDER BY at_ms, version",
            (kind, canteen_id),
        ).fetchall()
        return _as_history(rows)

    def _terminal_since(self, terminal_id: str) -> int:
        if terminal_id not in self._terminals:
            self.prefetch((terminal_id,), ())
        return self._terminals[terminal_id]


def _as_history(rows: Iterable[Any]) -> _History:
    """(since_ms, configs) from rows of (at_ms, config_json), in order."""
    rows = list(rows)
    return [int(r[0]) for r in rows], [_as_dict(r[1]) for r in rows]


def _settings_from(history: _History, row: Any) -> _History:
    """The settings' history ending with the current settings (``row``: the settings row
    holding them, or None when there is none)."""
    return _with_current(history, _as_dict(row[0]) if row else None)


def _with_current(history: _History, current: dict[str, Any] | None) -> _History:
    """The history, ending with the current version: a database whose history does not
    reach back (or a change recorded without a delta) still has what is in force now. A
    delta carries more keys than the stored config (name, unit): compare what prices.
    Builds new lists: the configs in them are shared (:func:`_as_dict`), never changed."""
    since, configs = history
    if current is None:
        return history
    last = configs[-1] if configs else None
    if last is None or any(last.get(k) != current.get(k) for k in ("meals", "items", "risk", "unit_id")):
        return [*since, since[-1] if since else 0], [*configs, current]
    return history


def _as_dict(text: str | None) -> dict[str, Any]:
    return _parsed(text) if text else {}


# config text → its parsed dict, shared by every transaction's book: the ingest worker reads
# the same few configs in every transaction (thousands a minute), and a config is stored
# text, so its parse cannot go stale; a changed config is another text. The dicts are only
# read (never changed) by the plausibility check and the reversals.
@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def config_at(book: FactsBook, canteen_id: str, at_ms: int) -> tuple[dict[str, Any], RiskLimits]:
    """The canteen's config and the risk limits in force at ``at_ms`` (the last version
    recorded at or before it; before the first, the first): what a terminal reversing a
    sale then was told (:mod:`server.sales.reversals`)."""
    settings = book._settings_history()
    canteen = book._canteen_history(canteen_id)

    def at(history: _History) -> dict[str, Any]:
        since, configs = history
        if not configs:
            return {}
        return configs[max(bisect.bisect_right(since, at_ms) - 1, 0)]

    config = at(canteen)
    return config, RiskLimits.from_config(at(settings).get("risk"), config.get("risk"))
