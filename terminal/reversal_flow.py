"""The operator's reversal (冲正) on the keypad, card reader and display: a pure state machine.

The operator presses **B** (冲正) on the keypad, lays their operator card on the reader,
types their six-digit operator PIN, chooses the sale — by its number among the last few
shown on the display, or by the diner laying their card on the reader — and confirms with
**#**; **\\*** cancels at any point. Each function takes the :class:`Flow` so far and one
event and returns a :class:`Step`: the next flow, what the display shows, and what the
shell (:class:`terminal.reversal_desk.ReversalDesk`) must find out or do before the next event
(``need``): ``operator`` (is this card an operator of the canteen?), ``pin`` (does the PIN
match?), ``sales`` (the reversible sales, of one card when ``Flow.card`` is set), ``reverse``
(journal the reversal of ``Flow.chosen``). No I/O here; tests drive it with plain values.

A stdin or fifo terminal (no keypad) takes the same decision as one line,
``reverse <operator card> <pin> [<sale seq>|last|card:<card>]`` (:func:`parse_line`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shared.clock import china_datetime
from shared.errors import message
from shared.money import format_fen

START_KEY = "B"  # labelled 冲正 on the board's keypad
CANCEL_KEY = "*"
CONFIRM_KEY = "#"
PIN_LENGTH = 6
MAX_PIN_TRIES = 3  # wrong operator PINs before the flow gives up
SHOWN = 4  # sales listed on the display at once
PERIOD_ZH = {"breakfast": "早餐", "lunch": "午餐", "dinner": "晚餐"}


@dataclass(frozen=True)
class Candidate:
    """A sale of this terminal that may still be reversed."""

    sale_seq: int
    amount_fen: int
    at_ms: int
    card_id: str | None
    method: str
    kind: str
    meal_period: str | None = None

    def label(self) -> str:
        """``12:03 午餐 ¥12.00 尾号0001`` — short enough for the customer display."""
        what = PERIOD_ZH.get(self.meal_period or "", "超市") if self.kind == "meal" else "超市"
        tail = f" 尾号{self.card_id[-4:]}" if self.card_id else " 数字人民币" if self.method == "ecny" else ""
        return f"{china_datetime(self.at_ms).strftime('%H:%M')} {what} {format_fen(self.amount_fen)}{tail}"


@dataclass(frozen=True)
class Flow:
    stage: str = "idle"  # idle | operator | pin | choose | confirm
    operator: str | None = None
    operator_name: str = ""
    pin: str = ""
    wrong: int = 0
    card: str | None = None  # the diner's card, when the sale is chosen by a tap
    candidates: tuple[Candidate, ...] = ()
    chosen: Candidate | None = None

    @property
    def active(self) -> bool:
        return self.stage != "idle"


@dataclass(frozen=True)
class Step:
    flow: Flow
    screen: tuple[str, ...] | None = None  # None: the display stays as it is
    tone: str = "info"  # info | ok | error (hardware.display.Screen kinds)
    need: str | None = None  # operator | pin | sales | reverse
    reason: str | None = None  # the flow ended without a reversal: why (an error code)


IDLE = Flow()


def _end(lines: tuple[str, ...], reason: str, tone: str = "error") -> Step:
    return Step(IDLE, lines, tone, reason=reason)


def start(flow: Flow) -> Step:
    """The operator pressed :data:`START_KEY`."""
    if flow.active:
        return Step(flow)
    return Step(Flow(stage="operator"), ("冲正", "请刷操作员卡", "*取消"))


def card(flow: Flow, card_id: str) -> Step:
    """A card laid on the reader while the flow runs."""
    if flow.stage == "operator":
        return Step(replace(flow, operator=card_id), need="operator")
    if flow.stage == "choose":
        return Step(replace(flow, card=card_id), need="sales")
    return Step(flow)  # not expected now: ignored


def operator_checked(flow: Flow, name: str | None) -> Step:
    """The shell's answer to ``need="operator"``: the operator's name, or None."""
    if name is None:
        return _end((message("operator_unknown"),), "operator_unknown")
    flow = replace(flow, stage="pin", operator_name=name, pin="")
    return Step(flow, _pin_screen(flow))


def _pin_screen(flow: Flow, note: str = "") -> tuple[str, ...]:
    masked = "*" * len(flow.pin) + "＿" * (PIN_LENGTH - len(flow.pin))
    return tuple(x for x in (f"操作员 {flow.operator_name}", "请输入操作员密码", masked, note) if x)


def key(flow: Flow, k: str) -> Step:
    """A key pressed while the flow runs."""
    if not flow.active:
        return start(flow) if k == START_KEY else Step(flow)
    if k == CANCEL_KEY:
        return _end((message("operator_cancelled"),), "operator_cancelled", "info")
    if flow.stage == "pin" and k.isdigit():
        flow = replace(flow, pin=flow.pin + k)
        if len(flow.pin) == PIN_LENGTH:
            return Step(flow, _pin_screen(flow), need="pin")
        return Step(flow, _pin_screen(flow))
    if flow.stage == "choose" and k.isdigit() and 1 <= int(k) <= len(flow.candidates[:SHOWN]):
        return _confirm(replace(flow, chosen=flow.candidates[int(k) - 1]))
    if flow.stage == "confirm" and k == CONFIRM_KEY:
        return Step(flow, ("正在冲正…",), need="reverse")
    return Step(flow)


def pin_checked(flow: Flow, ok: bool) -> Step:
    """The shell's answer to ``need="pin"``."""
    if ok:
        return Step(replace(flow, stage="choose", pin="", card=None), need="sales")
    wrong = flow.wrong + 1
    if wrong >= MAX_PIN_TRIES:
        return _end((message("operator_pin_wrong"), "已退出冲正"), "operator_pin_wrong")
    flow = replace(flow, pin="", wrong=wrong)
    return Step(
        flow,
        _pin_screen(flow, f"{message('operator_pin_wrong')}，还可尝试{MAX_PIN_TRIES - wrong}次"),
        "error",
        reason="operator_pin_wrong",
    )


def locked(flow: Flow) -> Step:
    """The shell's answer to ``need="pin"`` when the card is locked for the day."""
    return _end((message("operator_pin_locked"),), "operator_pin_locked")


def listed(flow: Flow, candidates: tuple[Candidate, ...], why: str = "reversal_no_sale") -> Step:
    """The shell's answer to ``need="sales"``: the reversible sales, newest first; when
    there are none, ``why`` (e.g. the card's last sale is outside the window)."""
    if not candidates:
        if flow.card is not None and flow.candidates:  # that card has none: choose again
            return Step(
                replace(flow, card=None),
                (message(why), f"卡 尾号{flow.card[-4:]}", "请重新选择或*取消"),
                "error",
                reason=why,
            )
        return _end((message(why), "未冲正"), why)
    flow = replace(flow, stage="choose", candidates=candidates)
    if flow.card is not None and len(candidates) == 1:
        return _confirm(replace(flow, chosen=candidates[0]))
    lines = [f"{i} {c.label()}" for i, c in enumerate(candidates[:SHOWN], start=1)]
    return Step(flow, ("选择要冲正的交易（或请顾客刷卡）", *lines))


def _confirm(flow: Flow) -> Step:
    assert flow.chosen is not None
    return Step(
        replace(flow, stage="confirm"),
        ("确认冲正？", flow.chosen.label(), f"{CONFIRM_KEY}确认 {CANCEL_KEY}取消"),
    )


def reversed_(flow: Flow, lines: tuple[str, ...], reason: str | None) -> Step:
    """The shell's answer to ``need="reverse"``: what to show, and why not (None: done)."""
    return Step(IDLE, lines, "error" if reason else "ok", reason=reason)


def timeout(flow: Flow) -> Step:
    """Nothing happened for too long: back to idle."""
    if not flow.active:
        return Step(flow)
    return _end((message("input_timeout"), "已退出冲正"), "input_timeout", "info")


# --- the same decision as one line (stdin / fifo terminals) ------------------------------


@dataclass(frozen=True)
class ReversalLine:
    """``reverse <operator card> <pin> [<sale seq>|last|card:<card>]``: which sale is
    ``sale_seq`` (a number), the newest reversible one (``last``, the default) or the newest
    of a diner's card."""

    operator_card: str
    pin: str
    sale_seq: int | None = None
    card: str | None = None


def parse_line(parts: list[str]) -> ReversalLine:
    """The words of a ``reverse`` line (after the word ``reverse``); ValueError if malformed."""
    if len(parts) not in (2, 3):
        raise ValueError("expected 'reverse <operator card> <pin> [<sale seq>|last|card:<card>]'")
    which = parts[2] if len(parts) == 3 else "last"
    if which == "last":
        return ReversalLine(parts[0], parts[1])
    if which.startswith("card:") and len(which) > 5:
        return ReversalLine(parts[0], parts[1], card=which[5:])
    if which.isdigit() and int(which) > 0:
        return ReversalLine(parts[0], parts[1], sale_seq=int(which))
    raise ValueError(f"which sale: a sale number, last or card:<card>, got {which!r}")
