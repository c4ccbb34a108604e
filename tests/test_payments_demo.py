"""The payment-methods demo: every method through its real device path, with a double spend
and an outage, ends consistent."""

from __future__ import annotations

import pytest

from simulator.payments_demo import render_payments, run_payments_demo

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_payments_demo_shows_every_method_and_stays_consistent() -> None:
    result = run_payments_demo("embedded")
    shown = {s["step"]: (s["tone"], s["display"][0]) for s in result["steps"]}
    assert shown["NTAG 424 card (SUN)"] == ("ok", "支付成功")
    assert shown["UID-only copy of that card"] == ("error", "卡片验证失败（疑似复制卡）")
    assert shown["phone QR code"] == ("ok", "支付成功")
    assert shown["same QR code again"] == ("error", "付款码已使用，请刷新后重试")
    assert shown["digital RMB wallet code"] == ("ok", "支付成功")
    assert shown["digital RMB while offline"] == ("error", "数字人民币需联网使用")
    assert shown["NTAG 424 card while offline (shop sale)"] == ("ok", "支付成功")
    assert set(result["totals"]["methods"]) == {"card", "qr", "ecny"}
    assert [i["kind"] for i in result["incidents"]] == ["qr_double_spent"]
    assert result["credential_revoked_on_terminal_a"]
    audit = result["audit"]
    assert (
        audit["approved"] == audit["applied"] == 5
        and audit["mismatches"] == 0
        and audit["ledger_sum_fen"] == 0
    )
    assert "全部一致" in render_payments(result)
