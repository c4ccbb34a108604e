"""The terminal: a tap in, a decision out, the sale on disk before "paid".

:class:`Terminal` ties the pieces together: it reads the cache, asks the pure
:func:`~terminal.authorize.authorize`, journals an approved sale with its outbox row in one
durable transaction, and only then shows "支付成功" on the display and pokes the sync agent.
A decline is recorded for the operator's totals and shown with its zh-CN reason.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from hardware.display import Display, MemoryDisplay, Screen
from shared.clock import Clock
from shared.errors import message
from shared.money import format_fen
from shared.protocol import Sale
from terminal.authorize import Decision, LinkState, TapRequest, authorize, decline
from terminal.config import TerminalConfig
from terminal.identify import Identifier, sun_keys_from_config
from terminal.rules import CanteenRules, RiskLimits, start_of_day_ms
from terminal.store import Store
from terminal.sync import SyncAgent


class Terminal:
    def __init__(
        self,
        config: TerminalConfig,
        clock: Clock,
        *,
        display: Display | None = None,
        mqtt_url: str | None = None,
        http_url: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.display = display or MemoryDisplay()
        self.store = Store(config.db_path)
        self.identify = Identifier(self.store.conn, sun_keys_from_config(config))
        self._journal_lock = threading.Lock()
        self.sync = SyncAgent(config, clock, journal_lock=self._journal_lock, mqtt_url=mqtt_url, http_url=http_url)
        self.approved = 0
        self.declined = 0

    def start(self) -> Terminal:
        self.sync.start()
        return self

    def stop(self) -> None:
        self.sync.stop()
        self.store.close()

    def link_state(self) -> LinkState:
        return LinkState(
            online=self.sync.online,
            offline_since_ms=self.sync.offline_since_ms,
            last_sync_ms=self.sync.last_sync_ms,
            unsent_sales=self.store.pending_count(),
            clock_offset_ms=self.sync.clock_offset_ms,
        )

    def tap(self, request: TapRequest) -> tuple[Decision, Sale | None]:
        """Decide a tap; an approved sale is durable before this returns."""
        with self._journal_lock:
            now = self.clock.now_ms()
            config = self.store.canteen_config(self.config.canteen_id) or {}
            rules = CanteenRules.from_config(self.config.canteen_id, config)
            limits = RiskLimits.from_config({**self.store.settings().get("risk", {}), **config.get("risk", {})})
            resolved = self.identify.resolve(request, now, rules)  # NFC/QR/ecny credential → card
            request = replace(resolved.request, credential=resolved.credential)  # what the sale records
            if resolved.max_offline_total_fen is not None:
                limits = replace(limits, max_offline_total_fen=min(limits.max_offline_total_fen, resolved.max_offline_total_fen))
            card = self.store.card_state(request.card_id) if request.card_id else None
            period = rules.period_at(now)
            meals = 0
            if card is not None and period is not None and request.kind == "meal":
                meals = self.store.meals_taken(card.holder_id, period.name, start_of_day_ms(now))
            link = self.link_state()
            if resolved.reason is not None:
                decision = decline(resolved.reason)
            else:
                decision = resolved.decision or authorize(request, card, rules, limits, link, now, meals)
            sale = None
            if decision.approved:
                sale = self.store.record_sale(
                    terminal_id=self.config.terminal_id,
                    canteen_id=self.config.canteen_id,
                    card_id=request.card_id,
                    holder_id=card.holder_id if card else None,
                    amount_fen=decision.amount_fen,
                    subsidy_fen=decision.subsidy_fen,
                    self_fen=decision.self_fen,
                    occurred_at_ms=now,
                    method=request.method,
                    kind=request.kind,
                    meal_period=decision.meal_period,
                    items=decision.items,
                    offline=not link.online,
                    visitor=decision.visitor,
                    credential=request.credential,
                )
                self.approved += 1
            else:
                self.store.record_decline(now, request.card_id, request.method, decision.reason or "?", decision.meal_period)
                self.declined += 1
        self._show(decision, link.online)
        if sale is not None:
            self.sync.poke()
        return decision, sale

    def decline(self, method: str, reason: str, card_id: str | None = None) -> None:
        """Record and show a refusal decided before authorization (e.g. a face that was
        not recognised, or wrong card digits at the second factor)."""
        with self._journal_lock:
            self.store.record_decline(self.clock.now_ms(), card_id, method, reason, None)
            self.declined += 1
        self.display.show(Screen((message(reason),), "error"))

    def _show(self, decision: Decision, online: bool) -> None:
        offline = () if online else ("【离线模式 OFFLINE】",)
        if decision.approved:
            lines = ("支付成功", f"金额 {format_fen(decision.amount_fen)}") + offline
            self.display.show(Screen(lines, "ok"))
        else:
            self.display.show(Screen((decision.message("zh"),) + offline, "error"))
