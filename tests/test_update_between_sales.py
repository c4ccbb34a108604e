"""A new version is switched to only between sales: never while a diner is in the middle of
one (typing a PIN), and only once the queue has been quiet for a while."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from shared.clock import FakeClock
from terminal.agent import PinOutcome
from terminal.authorize import TapRequest
from tests.test_terminal_agent import NOON, make_terminal


def test_nothing_is_switched_while_a_sale_is_in_hand_or_the_queue_is_busy(tmp_path: Path) -> None:
    term = make_terminal(tmp_path, FakeClock(NOON))
    switched: list[str] = []
    typing, typed = threading.Event(), threading.Event()

    def pin_entry(card_id: str, amount_fen: int) -> PinOutcome:
        typing.set()  # the diner is typing the PIN on the keypad (outside the journal lock)
        typed.wait(10)
        return PinOutcome(reason="pin_required")

    above_limit = TapRequest("C1", kind="shop", amount_fen=12_000)
    sale = threading.Thread(target=term.tap, args=(above_limit, pin_entry))
    sale.start()
    try:
        assert typing.wait(30)
        time.sleep(0.05)
        assert not term.when_idle(0.0, lambda: switched.append("now"))  # mid-sale: not now
        typed.set()
        sale.join(10)
        assert not term.when_idle(1.0, lambda: switched.append("now"))  # the sale just ended
        term.tap(TapRequest("C2", kind="shop", amount_fen=300))
        assert not term.when_idle(0.5, lambda: switched.append("now"))  # the next diner came
        time.sleep(0.6)
        assert term.when_idle(0.5, lambda: switched.append("now"))  # quiet: now
        assert switched == ["now"]
    finally:
        typed.set()
        sale.join(10)
        term.store.close()
