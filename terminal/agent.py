"""The terminal: a tap in, a decision out, the sale on disk before "paid".

:class:`Terminal` ties the pieces together. :meth:`Terminal.tap` is the single entry point
for a sale, whatever identified the diner (card, QR code, face, digital RMB): it reads the
cache, asks the pure :func:`~terminal.authorize.authorize`, journals an approved sale with
its outbox row in one durable transaction, and only then tells the diner ("支付成功" on
the display, plus an ``approved`` event for whoever listens) and marks the sale announced,
which releases it to the sync agent. A decline is recorded for the operator's totals and
shown with its zh-CN reason.

At start, a sale that was journaled but never announced (the power went between the
commit and the beep) is announced first — "断电前最后一笔交易已成功" — so every sale the
server ever applies was announced to its diner (see ``terminal.store``).

**Identification.** Inside the tap, before authorizing, :mod:`terminal.identify` turns
what the diner presented into the paying card and the proof the sale records: an NFC
card's SUN message is verified, a QR payment code is checked and used up (its offline
allowance may tighten the offline cap), and a digital RMB order the gateway reported paid
(:mod:`terminal.ecny`) comes back already approved — it moves no purse. A refusal decided
outside a tap (a face not recognised, digital RMB offline) goes through
:meth:`Terminal.decline`, which records and shows it the same way.

**Between sales.** :meth:`Terminal.when_idle` runs something (switching to a new software
version, flashing the board) only with no tap in hand and none for a quiet while, holding
the journal lock so that no sale starts meanwhile (``terminal.updater``).

An **operator card** (listed in the canteen config's ``operator_cards``, pushed by the
server with the canteen's rules, so the canteen's unit decides who its operators are) is
never charged: tapping it shows the day's totals on the display.

**The meal limit across terminals.** "Meals taken this period" at this canteen (each unit
sets its own canteen's rules, 方案 三(二)5) counts this terminal's own journal and, from
the server, every terminal's applied meals of the day (the ``meals`` of a holder change,
sent after each meal sale and in snapshots). Online, a second lunch at another terminal of
the canteen is refused once the first one's delta has arrived; a
terminal cut off from the server counts only its own sales and the last count it heard,
so with ``k`` terminals offline at once a card can take at most ``k × meal_limit`` meals
in one period. Each is paid from the card and visible at the server, never lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from hardware.display import Display, MemoryDisplay, Screen
from shared.clock import Clock, china_datetime, china_day
from shared.errors import message
from shared.money import format_fen
from shared.protocol import Sale
from terminal.authorize import (
    CardState,
    Decision,
    LinkState,
    PinApproval,
    TapRequest,
    authorize,
    decline,
)
from terminal.config import TerminalConfig
from terminal.identify import Identifier, sun_keys_from_config
from terminal.rules import CanteenRules, RiskLimits
from terminal.store import Store
from terminal.sync import SyncAgent
from terminal.sync_link import Transport
from terminal.totals import DayTotals, day_totals, screen_lines

log = logging.getLogger(__name__)

OFFLINE_BANNER = "【离线模式 OFFLINE】"
Event = dict[str, Any]


@dataclass(frozen=True)
class PinOutcome:
    """What asking for the PIN gave: the server's approval, or why not (a decline reason
    and, optionally, the lines to show instead of its text — e.g. the tries left)."""

    approval: PinApproval | None = None
    reason: str | None = None
    lines: tuple[str, ...] | None = None


PinEntry = Callable[[str, int], PinOutcome]  # (card id, amount in fen) → outcome


class _InHand:
    """``with terminal._in_hand:`` — a tap being decided (PIN entry included): not idle until
    it ends (see :meth:`Terminal.when_idle`). One instance per terminal, holding nothing per
    use: a generator-based context manager cost more than the counting."""

    __slots__ = ("_t",)

    def __init__(self, terminal: Terminal) -> None:
        self._t = terminal

    def __enter__(self) -> None:
        t = self._t
        with t._activity:
            t._active += 1

    def __exit__(self, *exc: object) -> None:
        t = self._t
        with t._activity:
            t._active -= 1
            t._last_activity = time.monotonic()


class Terminal:
    def __init__(
        self,
        config: TerminalConfig,
        clock: Clock,
        *,
        display: Display | None = None,
        mqtt_url: str | None = None,
        http_url: str | None = None,
        on_event: Callable[[Event], None] | None = None,
        config_path: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        """``config_path``: the configuration file, rewritten (0600) when the key is rotated.
        ``transport``: the sync agent's network, monotonic clock and boot id, when not the
        real ones (the deterministic simulator's; :class:`terminal.sync_link.Transport`)."""
        self.config = config
        self.clock = clock
        self.display = display or MemoryDisplay()
        self.on_event = on_event or (lambda event: None)
        self.store = Store(config.db_path)
        self.identify = Identifier(self.store.conn, sun_keys_from_config(config))
        self._journal_lock = threading.Lock()
        self.sync = SyncAgent(
            config,
            clock,
            journal_lock=self._journal_lock,
            mqtt_url=mqtt_url,
            http_url=http_url,
            on_link_change=self._on_link_change,
            sale_clock=self.sale_time,
            on_identity_conflict=self._on_identity_conflict,
            config_path=config_path,
            transport=transport,
        )
        # the store's rules epoch when the text (canteen config, settings) was read, the
        # text, and the rules parsed from it: one tuple, replaced whole (Store.rules_epoch)
        self._rules: tuple[int | None, tuple[str | None, str | None], tuple[CanteenRules, RiskLimits]] | None
        self._rules = None
        self.approved = 0
        self.declined = 0
        # taps in hand and when the last one ended (monotonic): see when_idle
        self._activity = threading.Lock()
        self._active = 0
        self._last_activity = time.monotonic()
        self._in_hand = _InHand(self)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> Terminal:
        self.recover()
        self.sync.start()
        return self

    def stop(self) -> None:
        self.sync.stop()
        self.store.close()

    def when_idle(self, quiet_s: float, action: Callable[[], None]) -> bool:
        """Run ``action`` between sales: with no tap in hand and none ended in the last
        ``quiet_s`` seconds, under the journal lock (no sale starts meanwhile). False, and
        nothing run, when the queue is not quiet."""
        with self._journal_lock:
            with self._activity:
                if self._active or time.monotonic() - self._last_activity < quiet_s:
                    return False
            action()
            return True

    def recover(self) -> int:
        """Announce sales journaled before a crash but never announced; returns how many."""
        with self._journal_lock:
            sales = self.store.unannounced()
            for sale in sales:
                when = china_datetime(sale.occurred_at_ms).strftime("%H:%M:%S")
                self.display.show(
                    Screen(("断电前最后一笔交易已成功", f"{when} 金额 {format_fen(sale.amount_fen)}"), "ok")
                )
                self.on_event(_sale_event("recovered", sale))
                self.store.mark_announced(sale.seq)
                log.warning(
                    "%s: announced sale %s journaled before a crash",
                    self.config.terminal_id,
                    sale.sale_id,
                    extra=_sale_fields(sale),
                )
        return len(sales)

    # --- the cache ---------------------------------------------------------------------

    def rules(self) -> tuple[CanteenRules, RiskLimits]:
        """The canteen's rules and risk limits, parsed again only when their text changed
        (a delta about anything else leaves them as they were). The text is read again only
        when a change to it may have been written since (:meth:`Store.rules_epoch`)."""
        epoch = self.store.rules_epoch()  # before the text: a change committed after it moves it
        cached = self._rules
        if cached is not None and epoch is not None and epoch == cached[0]:
            return cached[2]
        source = self.store.rules_source(self.config.canteen_id)
        if cached is not None and source == cached[1]:
            parsed = cached[2]
        else:
            config_json, settings_json = source
            config = json.loads(config_json) if config_json else {}
            rules = CanteenRules.from_config(self.config.canteen_id, config)
            for problem in rules.problems:
                log.error("%s: canteen config: %s (left out)", self.config.terminal_id, problem)
            settings = json.loads(settings_json) if settings_json else {}
            parsed = rules, RiskLimits.from_config(settings.get("risk"), config.get("risk"))
        self._rules = epoch, source, parsed
        return parsed

    def link_state(self, now_ms: int, floor_and_unsent: tuple[int | None, int] | None = None) -> LinkState:
        """The link as a sale at ``now_ms`` sees it. ``floor_and_unsent``:
        :meth:`Store.journal_floor_and_unsent`, when the caller read it already."""
        online = self.sync.in_sync
        last_sync = self.sync.last_sync_ms
        latest, unsent = floor_and_unsent or self.store.journal_floor_and_unsent()
        floor = max(latest or 0, last_sync or 0) or None
        return LinkState(
            online=online,
            offline_since_ms=self.sync.offline_since_ms,
            last_sync_ms=now_ms if online else last_sync,
            unsent_sales=unsent,
            clock_offset_ms=self.sync.clock_offset_ms,
            clock_floor_ms=floor,
        )

    # --- a tap -------------------------------------------------------------------------

    def sale_time(self, limits: RiskLimits | None = None) -> int:
        """The time a sale made now is dated by: the terminal's clock — or, online with a
        clock found further off than ``max_clock_offset_ms``, the server's time (known
        then). Offline such a clock refuses to sell (``clock_skew``) instead. ``limits``:
        the canteen's, when the caller holds them already."""
        now = self.clock.now_ms()
        offset = self.sync.clock_offset_ms
        if offset is None:
            return now
        limits = limits or self.rules()[1]
        if abs(offset) > limits.max_clock_offset_ms and self.sync.in_sync:
            return now + offset
        return now

    def decide(
        self,
        request: TapRequest,
        limits: RiskLimits | None = None,
        now_ms: int | None = None,
        rules: tuple[CanteenRules, RiskLimits] | None = None,
    ) -> tuple[Decision, CardState | None, LinkState, int]:
        """The decision for a tap whose card is known, with no side effects (the benchmark
        times this). ``limits`` may be tighter than the canteen's (a QR credential's offline
        allowance); ``now_ms`` is the sale time the identification step already used;
        ``rules``: :meth:`rules`, when the caller read them already."""
        canteen, canteen_limits = rules or self.rules()
        limits = limits or canteen_limits
        now = self.sale_time(canteen_limits) if now_ms is None else now_ms
        card: CardState | None = None
        if request.card_id:  # the card and the journal's floor in one read
            card, floor_and_unsent = self.store.card_state_and_floor(request.card_id, now)
            link = self.link_state(now, floor_and_unsent)
        else:
            link = self.link_state(now)
        meals = 0
        period = canteen.period_at(now) if request.kind == "meal" else None
        if card is not None and period is not None:
            day = china_day(now)
            meals = self.store.meals_taken(
                card.holder_id, self.config.canteen_id, period.name, day.iso_date, day.start_ms
            )
        return authorize(request, card, canteen, limits, link, now, meals), card, link, now

    def tap(self, request: TapRequest, pin_entry: PinEntry | None = None) -> tuple[Decision, Sale | None]:
        """Decide a tap; an approved sale is durable before the diner is told. A sale above
        the no-PIN limit (``pin_required``) asks ``pin_entry`` (the device loop: keypad and
        the server's online check) outside the journal lock, then is decided again with the
        approval; without ``pin_entry`` it is declined."""
        with self._in_hand:
            return self._tap(request, pin_entry)

    def _tap(self, request: TapRequest, pin_entry: PinEntry | None) -> tuple[Decision, Sale | None]:
        with self._journal_lock:
            canteen = self.rules()
            rules, limits = canteen
            if request.card_id is not None and request.card_id in rules.operator_cards:
                return self._operator_view(request)
            now = self.sale_time(limits)
            # identification (terminal.identify): an NFC SUN message, a QR code or a paid
            # digital RMB order → the paying card and the proof the sale records
            resolved = self.identify.resolve(request, now, rules)
            request = resolved.request
            if request.credential != resolved.credential:
                request = replace(request, credential=resolved.credential)
            if (
                resolved.reason is None
                and request.method == "card"
                and request.card_id in rules.operator_cards
            ):
                return self._operator_view(request)  # a SUN card whose real UID is an operator card
            card: CardState | None = None
            if resolved.reason is not None:
                decision, link = decline(resolved.reason), self.link_state(now)
            elif resolved.decision is not None:  # a paid digital RMB order: no card, no purse
                decision, link = resolved.decision, self.link_state(now)
            else:
                if resolved.max_offline_total_fen is not None:
                    limits = replace(
                        limits,
                        max_offline_total_fen=min(
                            limits.max_offline_total_fen, resolved.max_offline_total_fen
                        ),
                    )
                decision, card, link, now = self.decide(request, limits, now, canteen)
            asks_pin = decision.reason == "pin_required" and pin_entry is not None and card is not None
            if not asks_pin:
                sale = self._conclude(request, decision, card, link, now)
        if asks_pin:
            assert pin_entry is not None and card is not None
            # the identification above is done (a SUN counter or QR code is used up): the
            # second decision takes the identified request, not the credential again
            outcome = pin_entry(card.card_id, decision.amount_fen)
            with self._journal_lock:
                if outcome.approval is None:
                    now = self.sale_time()
                    decision, link = decline(outcome.reason or "pin_required"), self.link_state(now)
                    sale = self._conclude(request, decision, card, link, now, outcome.lines)
                else:
                    request = replace(request, pin_approval=outcome.approval)
                    decision, card, link, now = self.decide(request, limits)
                    sale = self._conclude(request, decision, card, link, now)
        self.sync.poke()
        return decision, sale

    def _conclude(
        self,
        request: TapRequest,
        decision: Decision,
        card: CardState | None,
        link: LinkState,
        now: int,
        lines: tuple[str, ...] | None = None,
    ) -> Sale | None:
        """Journal an approved sale (then tell the diner), or record and show a decline.
        Called with the journal lock held."""
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
                pin_approval=request.pin_approval.approval_id if request.pin_approval else None,
            )
            self.approved += 1
            if log.isEnabledFor(logging.INFO):  # its arguments cost more than the check
                log.info(
                    "sale %s approved: %s%s",
                    sale.sale_id,
                    format_fen(sale.amount_fen),
                    " (offline)" if sale.offline else "",
                    extra=_sale_fields(sale),
                )
            # journaled and fsynced: now, and only now, tell the diner; then release it
            self._show(decision, link.online)
            self.on_event(_sale_event("approved", sale))
            self.store.mark_announced(sale.seq)
            return sale
        self.store.record_decline(
            now, request.card_id, request.method, decision.reason or "?", decision.meal_period
        )
        self.declined += 1
        if lines:
            self.display.show(Screen(lines + (() if link.online else (OFFLINE_BANNER,)), "error"))
        else:
            self._show(decision, link.online)
        self.on_event({"event": "declined", "card_id": request.card_id, "reason": decision.reason})
        return None

    def decline(
        self, method: str, reason: str, card_id: str | None = None, lines: tuple[str, ...] | None = None
    ) -> Decision:
        """Record and show a refusal decided before :meth:`tap` (a face that was not
        recognised, wrong card digits at the second factor, digital RMB offline or refused
        by its gateway). ``lines`` replaces the reason's zh-CN text on the display."""
        with self._in_hand, self._journal_lock:
            self.store.record_decline(self.sale_time(), card_id, method, reason, None)
            self.declined += 1
            self.display.show(Screen(lines or (message(reason),), "error"))
            self.on_event({"event": "declined", "card_id": card_id, "reason": reason})
        return decline(reason)

    # --- the operator ------------------------------------------------------------------

    def totals(self, day: date | None = None) -> DayTotals:
        day = day or china_datetime(self.clock.now_ms()).date()
        return day_totals(
            self.store, day, self.config.canteen_id, self.config.terminal_id, online=self.sync.in_sync
        )

    def _operator_view(self, request: TapRequest) -> tuple[Decision, None]:
        totals = self.totals()
        self.display.show(Screen(screen_lines(totals), "info"))
        self.on_event({"event": "operator", "card_id": request.card_id, "totals": totals.to_json()})
        return Decision(False, "operator_card"), None

    # --- the display -------------------------------------------------------------------

    def _show(self, decision: Decision, online: bool) -> None:
        offline = () if online else (OFFLINE_BANNER,)
        if decision.approved:
            lines = ("支付成功", f"金额 {format_fen(decision.amount_fen)}") + offline
            self.display.show(Screen(lines, "ok"))
        else:
            self.display.show(Screen((decision.message("zh"),) + offline, "error"))

    def _on_identity_conflict(self, other_instance: str) -> None:
        """Another process runs this terminal's configuration (sync thread): say so."""
        self.display.show(
            Screen((message("terminal_identity_duplicate"), f"终端 {self.config.terminal_id}"), "error")
        )
        self.on_event({"event": "identity_conflict", "other_instance": other_instance})

    def _on_link_change(self, online: bool) -> None:
        """Called by the sync agent when the link to the server comes or goes."""
        if self.sync.identity_conflict is not None:
            self._on_identity_conflict(self.sync.identity_conflict)
        elif online:
            self.display.show(Screen(("网络已恢复", "请刷卡"), "info"))
        else:
            self.display.show(Screen((OFFLINE_BANNER, "网络中断，离线消费受限额控制", "请刷卡"), "error"))
        self.on_event({"event": "link", "online": online})


def _sale_fields(sale: Sale) -> dict[str, Any]:
    """A sale's fields on its log lines (``shared.log_setup``): its id first."""
    return {
        "sale_id": sale.sale_id,
        "terminal_id": sale.terminal_id,
        "seq": sale.seq,
        "uuid": sale.uuid,
        "amount_fen": sale.amount_fen,
        "method": sale.method,
        "offline": sale.offline,
    }


def _sale_event(kind: str, sale: Sale) -> Event:
    return {
        "event": kind,
        "seq": sale.seq,
        "uuid": sale.uuid,
        "card_id": sale.card_id,
        "amount_fen": sale.amount_fen,
        "offline": sale.offline,
    }
