"""``canteen-server payment-totals``: a canteen's takings per payment method (registered in
server.cli). Digital RMB is its own line, with its refunds, beside card, QR and face."""

from __future__ import annotations

from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.sales.ecny import method_totals, reconcile
from shared.clock import ms_from_china
from shared.errors import DomainError
from shared.money import format_fen

METHOD_NAMES = {"card": "刷卡 card", "qr": "扫码 QR", "face": "刷脸 face", "ecny": "数字人民币 e-CNY"}


@click.command("payment-totals")
@click.option("--canteen", "canteen_id", default=None, help="Canteen id (default: all canteens).")
@click.option("--from", "from_day", required=True, help="First day, e.g. 2026-11-01 (Asia/Shanghai).")
@click.option("--to", "to_day", required=True, help="Day after the last, e.g. 2026-12-01.")
@JSON_OPTION
@click.pass_obj
def payment_totals(obj: Any, canteen_id: str | None, from_day: str, to_day: str, as_json: bool) -> None:
    """Takings per payment method in [FROM, TO), with digital RMB refunds and reconciliation."""
    try:
        start, end = ms_from_china(f"{from_day}T00:00"), ms_from_china(f"{to_day}T00:00")
    except ValueError as exc:
        raise DomainError("invalid_input", f"dates must look like 2026-11-01: {exc}") from exc
    conn = obj.db()
    data = method_totals(conn, canteen_id, start, end)
    data["ecny_reconciliation"] = reconcile(conn)
    lines = [f"{canteen_id or '全部食堂 all canteens'} {from_day} – {to_day}"]
    for method, m in sorted(data["methods"].items()):
        lines.append(
            f"  {METHOD_NAMES.get(method, method):<18} {m['count']:>6} 笔 {format_fen(m['amount_fen']):>12}"
        )
    refunds = data["ecny_refunds"]
    lines.append(
        f"  数字人民币退款 e-CNY refunds {refunds['count']:>3} 笔 -{format_fen(refunds['amount_fen'])}"
    )
    lines.append(f"  合计 total {format_fen(data['total_fen'])}")
    rec = data["ecny_reconciliation"]
    if rec["paid_without_sale"] or rec["sale_without_payment"]:
        lines.append(
            f"  对账差异 reconciliation: paid without sale {rec['paid_without_sale']}, "
            f"sale without payment {rec['sale_without_payment']}"
        )
    emit(data, as_json, "\n".join(lines))


COMMANDS = [payment_totals]
