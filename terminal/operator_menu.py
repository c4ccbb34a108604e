"""The operator's menu on the device (操作员菜单): an operator card, then the keypad.

An operator card (the canteen config's ``operator_cards``) is never charged. Tapped at a
terminal with a keypad, it opens this menu on the customer display; without a keypad it
only shows the day's totals (:meth:`terminal.agent.Terminal.tap`). The entries:

===  =====================================================================================
key  does
===  =====================================================================================
1    当日汇总: the day's totals on the display (any key returns to the menu)
2    切换模式: meals ↔ shop (:class:`terminal.shop_flow.ShopFlow`)
3    日结: after ``#`` to confirm, the day close — the Z-report numbered, kept, shown and
     sent (:class:`terminal.day_close.DayClose`)
4    冲正: the reversal desk (:class:`terminal.reversal_desk.ReversalDesk`), which asks for
     the operator card and PIN itself — the same as key B (only when the loop has a desk)
\\*   leave the menu (so does 30 s without a key)
===  =====================================================================================

:attr:`OperatorMenu.entries` is a list, so another action for operators joins the menu as
one more :class:`MenuEntry` without touching these.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hardware.display import Screen
from hardware.keypad import Keypad
from terminal.day_close import DayClose
from terminal.shop_flow import MODE_ZH, ShopFlow
from terminal.totals import screen_lines

EXIT_KEY = "*"
CONFIRM_KEY = "#"


@dataclass(frozen=True)
class MenuEntry:
    key: str
    label: str  # short Chinese label on the display
    action: Callable[[str], bool]  # (operator card) → stay in the menu?


class OperatorMenu:
    def __init__(
        self,
        terminal: Any,  # terminal.agent.Terminal
        keypad: Keypad,
        lock: threading.Lock,
        shop: ShopFlow,
        day_close: DayClose,
        timeout_s: float = 30.0,
        start_reversal: Callable[[], None] | None = None,
    ) -> None:
        self.terminal = terminal
        self.keypad = keypad
        self.lock = lock
        self.shop = shop
        self.day_close = day_close
        self.timeout_s = timeout_s
        self.entries: list[MenuEntry] = [
            MenuEntry("1", "当日汇总", self._totals),
            MenuEntry("2", "切换模式", self._switch_mode),
            MenuEntry("3", "日结", self._close_day),
        ]
        self._start_reversal = start_reversal
        if start_reversal is not None:  # the reversal desk (冲正): it asks for card and PIN itself
            self.entries.append(MenuEntry("4", "冲正", self._reverse))

    def run(self, operator_card: str) -> None:
        """The menu until the operator leaves it (or stops pressing keys)."""
        with self.lock:  # no PIN pad or face payment reads the keypad meanwhile
            self.keypad.clear()
            self.terminal.on_event({"event": "operator_menu", "card_id": operator_card})
            while True:
                self.terminal.display.show(Screen(self.menu_lines(), "info"))
                key = self.keypad.read_key(self.timeout_s)
                if key is None or key == EXIT_KEY:
                    self.terminal.display.show(Screen(("已退出操作员菜单",), "info"))
                    return
                entry = next((e for e in self.entries if e.key == key), None)
                if entry is not None and not entry.action(operator_card):
                    return

    def menu_lines(self) -> tuple[str, ...]:
        labels = [f"{e.key} {self._label(e)}" for e in self.entries]
        rows = ["  ".join(labels[i : i + 2]) for i in range(0, len(labels), 2)]
        return (f"操作员菜单 · 当前{MODE_ZH[self.shop.mode]}", *rows, f"{EXIT_KEY} 退出")

    def _label(self, entry: MenuEntry) -> str:
        if entry.action == self._switch_mode:
            return "切换为" + MODE_ZH["meal" if self.shop.active else "shop"]
        return entry.label

    # --- the entries ---------------------------------------------------------------------

    def _totals(self, _card: str) -> bool:
        self.terminal.display.show(Screen(screen_lines(self.terminal.totals()), "info"))
        self.keypad.read_key(self.timeout_s)  # any key: back to the menu
        return True

    def _switch_mode(self, _card: str) -> bool:
        self.shop.set_mode("meal" if self.shop.active else "shop")
        return False

    def _reverse(self, _card: str) -> bool:
        assert self._start_reversal is not None
        self._start_reversal()
        return False

    def _close_day(self, card: str) -> bool:
        self.terminal.display.show(Screen(("确认日结？", f"{CONFIRM_KEY} 确认  {EXIT_KEY} 取消"), "info"))
        if self.keypad.read_key(self.timeout_s) != CONFIRM_KEY:
            return True
        self.day_close.close(card)
        return False
