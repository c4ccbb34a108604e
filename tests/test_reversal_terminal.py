"""Reversals (冲正) at the terminal (issue 13): the operator's flow on the real device loop
— key B, operator card, operator PIN, the sale chosen from the display or by the diner's
card, # to confirm — journaled before the display says 冲正成功, offline too within the
day's limits, and in the operator's totals.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hardware.keypad import SimulatedKeypad
from hardware.reader import SimulatedCardReader
from shared.clock import FakeClock, ms_from_china
from shared.ecny_gateway import SimulatedGateway
from shared.pin_hash import pin_record
from shared.protocol import ReversalResult
from shared.protocol.messages import Balance, decode_changes
from simulator.waiting import wait_until
from terminal import reversal_flow as rf
from terminal import reversals
from terminal.agent import Terminal
from terminal.authorize import TapRequest
from terminal.devices import DeviceLoop, Order
from terminal.ecny import EcnyCashier
from tests.ident_helpers import CANTEEN, offline_terminal
from tests.terminal_support import JournalCheckingDisplay, holder_with_card

NOON = ms_from_china("2026-01-06T12:00")
MINUTE = 60_000
OPERATOR, PIN = "OP1", "246810"
PIN_RECORD = pin_record(PIN)  # scrypt is slow on purpose: hash once


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


def with_operator(t: Terminal, **config: Any) -> Terminal:
    canteen = {**CANTEEN, "operators": {OPERATOR: {"name": "王五", "pin_hash": PIN_RECORD}}, **config}
    t.store.apply_changes(2, decode_changes(({"kind": "canteen", "canteen_id": "C01", "config": canteen},)))
    return t


class Counter:
    """A terminal with a simulated card reader and keypad in the real device loop."""

    def __init__(self, tmp_path: Path, clock: FakeClock, *, online: bool = True, **config: Any) -> None:
        self.clock = clock
        self.events: list[dict[str, Any]] = []
        self.t = with_operator(offline_terminal(tmp_path, clock, online=online, **config))
        self.t.on_event = self.events.append
        # when 冲正成功 is shown, the reversal must already be committed
        self.t.display = JournalCheckingDisplay(
            self.t.config.db_path,
            "reversals",
            lambda screen: bool(screen.lines) and screen.lines[0] == "冲正成功",
        )
        self.loop = DeviceLoop.from_config(self.t, self.t.config, order=lambda: Order("shop", amount_fen=800))
        self.keypad = SimulatedKeypad()
        self.loop.keypad = self.keypad
        self.loop.start()

    @property
    def reader(self) -> SimulatedCardReader:
        reader = self.loop.reader
        assert isinstance(reader, SimulatedCardReader)
        return reader

    def sell(self, card: str = "C1") -> None:
        n = self.t.approved
        self.reader.present(card)
        assert wait_until(lambda: self.t.approved == n + 1, 15)
        self.clock.advance_ms(MINUTE)

    def screen(self) -> tuple[str, ...]:
        return self.t.display.last.lines  # type: ignore[attr-defined,no-any-return]

    def shown(self, text: str) -> bool:
        return wait_until(lambda: text in "\n".join(self.screen()), 15)

    def press(self, keys: str) -> None:
        self.keypad.press(keys)

    def begin(self, operator: str = OPERATOR) -> None:
        """Key B, then the operator card (once the display asks for it)."""
        self.press("B")
        assert self.shown("请刷操作员卡")
        self.reader.present(operator)

    def reversal_rows(self) -> list[sqlite3.Row]:
        return self.t.store.conn.execute("SELECT * FROM reversals ORDER BY seq").fetchall()

    def close(self) -> None:
        self.loop.stop()


@pytest.fixture
def counter(tmp_path: Path, clock: FakeClock):  # noqa: ANN201
    c = Counter(tmp_path, clock)
    yield c
    c.close()


def test_the_operator_reverses_the_last_sale_with_card_pin_choice_and_confirm(counter: Counter) -> None:
    counter.sell()
    counter.sell()
    counter.press("B")
    assert counter.shown("请刷操作员卡")
    counter.reader.present(OPERATOR)
    assert counter.shown("请输入操作员密码") and "操作员 王五" in counter.screen()
    counter.press(PIN[:3])
    assert counter.shown("***＿＿＿")  # digits never shown
    counter.press(PIN[3:])
    assert counter.shown("选择要冲正的交易")
    lines = counter.screen()
    assert lines[1].startswith("1 12:01 超市 ¥8.00 尾号C1") and lines[2].startswith("2 12:00")
    counter.press("1")
    assert counter.shown("确认冲正？")
    counter.press("#")
    assert counter.shown("冲正成功")
    assert counter.screen()[:2] == ("冲正成功", "退回 ¥8.00")
    [row] = counter.reversal_rows()
    assert (row["sale_seq"], row["amount_fen"], row["operator_card"], row["announced"]) == (
        2,
        800,
        OPERATOR,
        1,
    )
    assert counter.t.display.journaled_when_shown == [1]  # type: ignore[attr-defined]
    [ev] = [e for e in counter.events if e["event"] == "reversed"]
    assert (ev["sale_seq"], ev["amount_fen"], ev["offline"]) == (2, 800, False)
    assert reversals.outbox_after(counter.t.store, 0, 10)[0][1]["sale_uuid"] == ev["sale_uuid"]


def test_a_reversed_sale_is_no_longer_spending_and_the_totals_show_sales_reversals_net(
    counter: Counter,
) -> None:
    counter.sell()
    counter.sell()
    before = counter.t.store.card_state("C1")
    assert before is not None and before.unconfirmed_fen == 1600
    assert counter.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN)).ok
    after = counter.t.store.card_state("C1")
    assert after is not None and (after.unconfirmed_fen, after.unconfirmed_count) == (800, 1)
    totals = counter.t.totals()
    assert (totals.total.count, totals.total.amount_fen) == (2, 1600)
    assert (totals.reversals.count, totals.reversals.amount_fen, totals.net_fen) == (1, 800, 800)


def test_the_diners_card_picks_the_sale(counter: Counter) -> None:
    counter.t.store.apply_changes(
        3,
        decode_changes(holder_with_card("H2", "C2")),
    )
    counter.sell("C1")
    counter.sell("C2")
    counter.sell("C1")
    counter.begin()
    assert counter.shown("请输入操作员密码")
    counter.press(PIN)
    assert counter.shown("选择要冲正的交易")
    counter.reader.present("C2")  # the diner lays their card: their one sale, straight to confirm
    assert counter.shown("确认冲正？") and "尾号C2" in counter.screen()[1]
    counter.press("#")
    assert counter.shown("冲正成功")
    assert [r["sale_seq"] for r in counter.reversal_rows()] == [2]


def test_outside_the_window_nothing_is_listed_and_a_named_sale_is_refused(counter: Counter) -> None:
    counter.sell()
    counter.clock.advance_ms(10 * MINUTE)  # the sale is 11 minutes old: the default window is 10
    counter.begin()
    assert counter.shown("请输入操作员密码")
    counter.press(PIN)
    assert counter.shown("已超过冲正时限")  # nothing listed, and why
    assert {"event": "reversal_declined", "reason": "reversal_outside_window"} in counter.events
    out = counter.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN, sale_seq=1))
    assert (out.ok, out.reason) == (False, "reversal_outside_window")
    assert counter.screen()[0] == "已超过冲正时限"
    assert counter.reversal_rows() == []


def test_wrong_pins_end_the_flow_and_a_stranger_card_is_no_operator(counter: Counter) -> None:
    counter.sell()
    counter.begin("C1")  # a diner's card is not an operator card
    assert counter.shown("不是本食堂的操作员卡")
    assert not counter.loop.reversal.active
    counter.begin()
    assert counter.shown("请输入操作员密码")
    counter.press("111111")
    assert counter.shown("还可尝试2次")
    counter.press("222222")
    assert counter.shown("还可尝试1次")
    counter.press("333333")
    assert counter.shown("已退出冲正")
    assert not counter.loop.reversal.active and counter.reversal_rows() == []


def test_star_cancels_and_the_next_tap_pays_again(counter: Counter) -> None:
    counter.sell()
    counter.begin()
    assert counter.shown("请输入操作员密码")
    counter.press("*")
    assert counter.shown("已取消")
    counter.sell()  # the reader pays again
    assert counter.reversal_rows() == []


def test_a_sale_is_reversed_once(counter: Counter) -> None:
    counter.sell()
    assert counter.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN, sale_seq=1)).ok
    again = counter.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN, sale_seq=1))
    assert (again.ok, again.reason) == (False, "sale_already_reversed")


def test_offline_reversals_are_bounded_per_day(tmp_path: Path, clock: FakeClock) -> None:
    c = Counter(tmp_path, clock, online=False)
    try:
        for _ in range(4):
            c.sell()
        outcomes = [c.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN, sale_seq=n)) for n in (1, 2, 3, 4)]
        assert [o.reason for o in outcomes] == [None, None, None, "reversal_offline_limit"]
        assert c.screen()[0] == "离线冲正已达上限，请联网后再试"
        assert all(r["offline"] == 1 for r in c.reversal_rows())
        assert "【离线冲正，联网后入账】" in outcomes[0].lines
    finally:
        c.close()


@contextmanager
def ecny_counter(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Counter, EcnyCashier, SimulatedGateway]]:
    """A counter whose QR scanner takes digital RMB codes through the simulated gateway,
    and wallet W1 there holding 1000 fen; closed after."""
    c = Counter(tmp_path, clock, qr_scanner="simulated", ecny_gateway="simulated")
    try:
        assert c.loop.cashier is not None
        gw = c.loop.cashier.gateway
        assert isinstance(gw, SimulatedGateway)
        gw.add_wallet("W1", 1000)
        yield c, c.loop.cashier, gw
    finally:
        c.close()


def test_a_digital_rmb_sale_is_refunded_through_the_gateway(tmp_path: Path, clock: FakeClock) -> None:
    with ecny_counter(tmp_path, clock) as (c, cashier, gw):
        decision, sale = cashier.pay_with_code(gw.payment_code("W1"), kind="shop", items=(("water", 1),))
        assert decision.approved and sale is not None and gw.wallets["W1"].balance_fen == 800
        out = c.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN))
        assert out.ok and out.reversal is not None
        assert out.reversal.refund_no is not None and out.reversal.method == "ecny"
        assert gw.wallets["W1"].balance_fen == 1000  # back in the diner's wallet
        assert "数字人民币原路退回" in c.screen()


def test_offline_a_digital_rmb_sale_cannot_be_reversed(tmp_path: Path, clock: FakeClock) -> None:
    with ecny_counter(tmp_path, clock) as (c, cashier, gw):
        cashier.pay_with_code(gw.payment_code("W1"), kind="shop", items=(("water", 1),))
        c.t.sync.assume(False)
        out = c.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN))
        assert (out.ok, out.reason) == (False, "ecny_offline")
        assert gw.wallets["W1"].balance_fen == 800 and c.reversal_rows() == []


def test_an_unannounced_reversal_is_announced_at_the_next_start(tmp_path: Path, clock: FakeClock) -> None:
    t = with_operator(offline_terminal(tmp_path, clock))
    t.tap(TapRequest("C1", kind="shop", amount_fen=500))
    sale = dict(t.store.conn.execute("SELECT * FROM journal WHERE seq = 1").fetchone())
    reversals.record(
        t.store,
        terminal_id=t.config.terminal_id,
        canteen_id="C01",
        sale=sale,
        operator_card=OPERATOR,
        occurred_at_ms=clock.now_ms(),
        offline=False,
    )  # the power went before the display said anything
    assert reversals.outbox_after(t.store, 0, 10) == []  # not sent before it is announced
    events: list[dict[str, Any]] = []
    t.on_event = events.append
    loop = DeviceLoop(t)
    assert loop.reversal.recover() == 1
    assert t.display.last.lines[0] == "断电前最后一笔冲正已成功"  # type: ignore[attr-defined]
    assert [e["event"] for e in events] == ["reversed"]
    assert len(reversals.outbox_after(t.store, 0, 10)) == 1


def test_answers_settle_the_outbox_and_a_pending_one_stays(tmp_path: Path, clock: FakeClock) -> None:
    t = with_operator(offline_terminal(tmp_path, clock))
    for _ in range(2):
        t.tap(TapRequest("C1", kind="shop", amount_fen=500))
    desk = DeviceLoop(t).reversal
    r1 = desk.by_line(rf.ReversalLine(OPERATOR, PIN, sale_seq=1)).reversal
    r2 = desk.by_line(rf.ReversalLine(OPERATOR, PIN, sale_seq=2)).reversal
    assert r1 is not None and r2 is not None
    counts = reversals.apply_results(
        t.store,
        (
            ReversalResult(
                r1.terminal_id, r1.seq, r1.uuid, "applied", None, 500, 0, "H1", Balance(10_000, 0, 9)
            ),
            ReversalResult(r2.terminal_id, r2.seq, r2.uuid, "pending"),
            ReversalResult(r2.terminal_id, 99, "x", "applied"),
        ),
        t.config.terminal_id,
    )
    assert counts == {"applied": 1, "rejected": 0, "waiting": 1, "ignored": 1}
    assert [s for s, _ in reversals.outbox_after(t.store, 0, 10)] == [r2.seq]  # resent until final
    assert t.store.card_state("C1").subsidy_fen == 10_000  # type: ignore[union-attr]
    statuses = [r["status"] for r in t.store.conn.execute("SELECT status FROM reversals ORDER BY seq")]
    assert statuses == ["applied", "waiting"]


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("reverse OP1 246810", rf.ReversalLine("OP1", "246810")),
        ("reverse OP1 246810 17", rf.ReversalLine("OP1", "246810", sale_seq=17)),
        ("reverse OP1 246810 card:C9", rf.ReversalLine("OP1", "246810", card="C9")),
    ],
)
def test_reverse_lines(line: str, parsed: rf.ReversalLine) -> None:
    from terminal.readers import parse_line  # the reader module owns the line formats

    assert parse_line(line) == parsed


def test_the_flow_is_a_pure_state_machine() -> None:
    step = rf.key(rf.IDLE, "B")
    assert step.flow.stage == "operator" and step.need is None
    step = rf.card(step.flow, "OP1")
    assert step.need == "operator"
    step = rf.operator_checked(step.flow, "王五")
    for d in "24681":
        step = rf.key(step.flow, d)
        assert step.need is None
    step = rf.key(step.flow, "0")
    assert (step.need, step.flow.pin) == ("pin", "246810")
    step = rf.pin_checked(step.flow, True)
    assert step.need == "sales" and step.flow.pin == ""  # the PIN is not kept
    c = rf.Candidate(7, 1200, NOON, "C00001", "card", "meal", "lunch")
    step = rf.listed(step.flow, (c,))
    assert step.screen == ("选择要冲正的交易（或请顾客刷卡）", "1 12:00 午餐 ¥12.00 尾号0001")
    assert rf.key(step.flow, "2").flow.stage == "choose"  # no sale 2
    step = rf.key(step.flow, "1")
    assert step.flow.stage == "confirm" and step.flow.chosen == c
    step = rf.key(step.flow, "#")
    assert step.need == "reverse"
    assert not rf.reversed_(step.flow, ("冲正成功",), None).flow.active
    assert not rf.timeout(step.flow).flow.active


def test_the_journaled_reversal_carries_what_the_server_checks(counter: Counter) -> None:
    counter.sell()
    out = counter.loop.reversal.by_line(rf.ReversalLine(OPERATOR, PIN))
    assert out.reversal is not None
    wire = json.loads(counter.reversal_rows()[0]["reversal_json"])
    sale = json.loads(
        counter.t.store.conn.execute("SELECT sale_json FROM journal WHERE seq = 1").fetchone()[0]
    )
    assert (wire["sale_seq"], wire["sale_uuid"], wire["amount_fen"]) == (1, sale["uuid"], sale["amount_fen"])
    assert wire["uuid"] != sale["uuid"] and wire["terminal_id"] == sale["terminal_id"]


def test_five_wrong_operator_pins_lock_the_card_until_tomorrow(counter: Counter) -> None:
    counter.sell()
    desk = counter.loop.reversal
    reasons = [desk.by_line(rf.ReversalLine(OPERATOR, "111111")).reason for _ in range(5)]
    assert reasons == ["operator_pin_wrong"] * 4 + ["operator_pin_locked"]  # the fifth locks
    locked = desk.by_line(rf.ReversalLine(OPERATOR, PIN))  # even the right PIN, today
    assert (locked.ok, locked.reason) == (False, "operator_pin_locked")
    assert counter.screen()[0] == "操作员密码错误次数过多，今日已锁定"
    counter.clock.advance_ms(24 * 60 * MINUTE)
    counter.sell()
    assert desk.by_line(rf.ReversalLine(OPERATOR, PIN)).ok


def test_the_operators_totals_in_chinese_show_sales_reversals_and_net() -> None:
    from terminal.totals import render_zh, screen_lines, summarize

    sale = {
        "kind": "shop",
        "meal_period": None,
        "method": "card",
        "visitor": 0,
        "offline": 0,
        "status": "applied",
    }
    t = summarize(
        "2026-01-06",
        "C01",
        "T1",
        [
            {**sale, "amount_fen": 1200},
            {**sale, "amount_fen": 800},
            {**sale, "amount_fen": 500, "status": "rejected"},
        ],
        [],
        unsent_sales=0,
        last_sync_ms=None,
        online=True,
        reversals=[
            {"amount_fen": 800, "status": "applied", "sale_status": "applied"},
            {"amount_fen": 500, "status": "new", "sale_status": "rejected"},  # its sale was never paid
            {"amount_fen": 300, "status": "rejected", "sale_status": "applied"},  # the server said no
        ],
    )
    assert (t.total.amount_fen, t.reversals.count, t.reversals.amount_fen, t.net_fen) == (2000, 1, 800, 1200)
    text = render_zh(t)
    assert "冲正              1 笔        -¥8.00" in text and "净额                          ¥12.00" in text
    assert "冲正 1笔 净额 ¥12.00" in screen_lines(t)
