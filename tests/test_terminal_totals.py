"""The operator's day totals: what the canteen took today, by meal, payment method, staff
vs. visitors, what was declined and why, and what has not reached the server yet."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from shared.clock import ms_from_china
from terminal.cli import main
from terminal.store import Store
from terminal.totals import render_zh, summarize
from tests.terminal_support import journal_sale

SALES = [
    {
        "kind": "meal",
        "meal_period": "lunch",
        "method": "card",
        "visitor": 0,
        "offline": 0,
        "amount_fen": 1200,
        "status": "applied",
    },
    {
        "kind": "meal",
        "meal_period": "lunch",
        "method": "face",
        "visitor": 1,
        "offline": 1,
        "amount_fen": 1500,
        "status": "pending",
    },
    {
        "kind": "meal",
        "meal_period": "breakfast",
        "method": "qr",
        "visitor": 0,
        "offline": 0,
        "amount_fen": 500,
        "status": "applied",
    },
    {
        "kind": "shop",
        "meal_period": None,
        "method": "ecny",
        "visitor": 1,
        "offline": 0,
        "amount_fen": 350,
        "status": "applied",
    },
    {
        "kind": "meal",
        "meal_period": "dinner",
        "method": "card",
        "visitor": 0,
        "offline": 1,
        "amount_fen": 1000,
        "status": "rejected",
    },
]


def test_totals_add_up_by_period_method_and_visitor() -> None:
    t = summarize(
        "2026-01-06",
        "C01",
        "T1",
        SALES,
        ["insufficient_balance", "meal_limit_reached", "insufficient_balance"],
        unsent_sales=1,
        last_sync_ms=None,
        online=False,
    )
    assert (t.total.count, t.total.amount_fen) == (4, 3550)
    assert {k: (v.count, v.amount_fen) for k, v in t.by_period.items()} == {
        "lunch": (2, 2700),
        "breakfast": (1, 500),
        "shop": (1, 350),
    }
    assert t.by_method["ecny"].amount_fen == 350 and t.by_method["card"].count == 1
    assert (t.staff.amount_fen, t.visitors.amount_fen) == (1700, 1850)
    assert (t.rejected_by_server.count, t.offline.count) == (1, 1)
    assert t.declines == {"insufficient_balance": 2, "meal_limit_reached": 1}


def test_the_printout_is_in_chinese_with_yuan_amounts() -> None:
    t = summarize(
        "2026-01-06",
        "C01",
        "T1",
        SALES,
        ["insufficient_balance"],
        unsent_sales=3,
        last_sync_ms=None,
        online=False,
    )
    text = render_zh(t)
    for needle in (
        "当日汇总",
        "午餐",
        "早餐",
        "超市",
        "刷卡",
        "扫码",
        "刷脸",
        "数字人民币",
        "本单位职工",
        "外单位来客",
        "余额不足（insufficient_balance） 1 次",
        "未上传交易        3 笔",
        "从未",
        "【离线】",
        "¥35.50",
        "服务器拒绝",
    ):
        assert needle in text, needle


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "terminal.json"
    path.write_text(
        json.dumps(
            {
                "terminal_id": "T1",
                "canteen_id": "C01",
                "secret_hex": "00",
                "server_public_key": "00",
                "broker_url": "mqtt://127.0.0.1:1",
                "server_url": "http://127.0.0.1:1",
                "db_path": str(tmp_path / "t.sqlite"),
            }
        )
    )
    return path


def test_canteen_terminal_totals_reads_the_days_journal(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(tmp_path / "t.sqlite")
    for day, amount in (("2026-01-06T12:00", 1200), ("2026-01-06T23:59", 300), ("2026-01-07T00:00", 999)):
        journal_sale(store, amount, ms_from_china(day), kind="shop", announced=True)
    store.record_decline(ms_from_china("2026-01-06T12:01"), "C9", "card", "card_unknown", None)
    store.close()
    result = CliRunner().invoke(main, ["totals", "--config", str(config), "--date", "2026-01-06", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total"] == {"count": 2, "amount_fen": 1500} and data["declines"] == {"card_unknown": 1}
    assert data["unsent_sales"] == 3
    result = CliRunner().invoke(main, ["totals", "--config", str(config), "--date", "2026-01-07"])
    assert result.exit_code == 0 and "¥9.99" in result.output


def test_a_bad_date_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["totals", "--config", str(_config(tmp_path)), "--date", "6.1.2026"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output


def test_status_says_offline_loudly(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(tmp_path / "t.sqlite")
    store.set_metas({"link_state": "offline", "offline_since_ms": str(ms_from_china("2026-01-06T11:00"))})
    store.close()
    result = CliRunner().invoke(main, ["status", "--config", str(config)])
    assert (
        result.exit_code == 0
        and "【离线 OFFLINE】" in result.output
        and "2026-01-06 11:00:00" in result.output
    )
    data = json.loads(CliRunner().invoke(main, ["status", "--config", str(config), "--json"]).output)
    assert data["state"] == "offline" and data["unsent_sales"] == 0
