"""``canteen-server trace-sale``: one sale from the server's decision through its ledger
entries to the settlement statement that carries it (:mod:`server.closing.sale_trace`)."""

from __future__ import annotations

from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.closing.sale_trace import parse_sale_id, trace
from shared.clock import china_datetime
from shared.money import format_fen


@click.command("trace-sale")
@click.argument("sale_id")
@JSON_OPTION
@click.pass_obj
def trace_sale(obj: Any, sale_id: str, as_json: bool) -> None:
    """Follow a sale (T0001/17: terminal id / sequence number, as in the logs) to its
    ledger entries and its settlement statement."""
    terminal_id, seq = parse_sale_id(sale_id)
    data = trace(obj.db(), terminal_id, seq)
    s = data["sale"]
    when = lambda ms: china_datetime(ms).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    lines = [
        f"交易 sale {data['sale_id']} ({s['uuid']}) {s['status']}"
        + (f" [{s['reason']}]" if s["reason"] else "")
        + f" {format_fen(s['amount_fen'])} {s['method']}/{s['kind']} 食堂 canteen {s['canteen_id']}",
        f"  刷卡 tapped {when(s['occurred_at_ms'])}{' (offline)' if s['offline'] else ''}  "
        f"入账 received {when(s['received_at_ms'])}",
        *(f"  分录 entry {e['from']} → {e['to']} {format_fen(e['amount_fen'])}" for e in data["entries"]),
    ]
    if data["quarantine"]:
        q = data["quarantine"]
        lines.append(f"  待审核 held for review: {q['reason']} ({q['state']})")
    st = data["statement"]
    if st["state"] == "settled":
        lines.append(
            f"  结算单 statement {st['quarter']} {st['canteen_id']} (as {st['as']}): "
            f"{st['sales_count']} sales, gross {format_fen(st['gross_fen'])}, "
            f"net {format_fen(st['net_fen'])} → {st['payee']}"
        )
    else:
        lines.append(f"  结算单 statement {st['quarter']}: {st['state']} — {st['why']}")
    emit(data, as_json, lines)


COMMANDS = [trace_sale]
