"""``canteen-server fleet``: every terminal's health and the active alerts (运维总览).

One line per terminal — online or 【离线】 and since when, the last heartbeat, unsent sales
and the oldest one's age, clock offset, software, free disk, journal size, last error — then
the alerts, each with its stable code. ``--json`` prints what ``GET /api/v1/fleet`` serves.
"""

from __future__ import annotations

from typing import Any

import click

from server.cli.output import JSON_OPTION, emit
from server.registry.fleet import limits_from_config, report
from shared.clock import china_datetime
from shared.errors import message


def _when(ms: int | None) -> str:
    return china_datetime(ms).strftime("%m-%d %H:%M:%S") if ms else "-"


def _age(now: int, ms: int | None) -> str:
    if ms is None:
        return "-"
    s = max(now - ms, 0) // 1000
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / (1024 * 1024):.0f}MB"


def lines(data: dict[str, Any]) -> list[str]:
    now = data["now_ms"]
    out = [f"终端 terminals: {len(data['terminals'])} · 在线 online: {data['online']}"]
    for t in data["terminals"]:
        state = {"online": "在线 online", "revoked": "已停用 revoked"}.get(t["status"], "【离线 OFFLINE】")
        offset = t["clock_offset_ms"]
        out.append(
            f"{t['terminal_id']} {t['canteen_id']} {state} 自 since {_when(t['since_ms'])} · "
            f"心跳 heard {_when(t['last_seen_ms'])} · "
            f"未上传 unsent {t['unsent_sales'] if t['unsent_sales'] is not None else '-'}"
            f" (最早 oldest {_age(now, t['oldest_unsent_ms']) if t['unsent_sales'] else '-'}) · "
            f"同步 sync {_when(t['last_sync_ms'])} · "
            f"时钟 clock {'-' if offset is None else f'{offset:+d}ms'} · "
            f"版本 {t['software'] or '-'} · 磁盘 free {_mb(t['disk_free_bytes'])} · "
            f"日志 journal {_mb(t['journal_bytes'])}"
            + (f" · 错误 last error {t['last_error']} {_when(t['last_error_ms'])}" if t["last_error"] else "")
            + (
                f" · 换密钥中 rotating since {_when(t['rotation_started_ms'])}"
                if t["rotation_started_ms"]
                else ""
            )
        )
    out.append(f"告警 alerts: {len(data['alerts'])}" if data["alerts"] else "告警 alerts: 无 none")
    for a in data["alerts"]:
        out.append(
            f"  [{a['code']}] {a['terminal_id']} ({a['canteen_id']}) {message(a['code'])}: {a['detail']}"
        )
    return out


@click.command("fleet")
@JSON_OPTION
@click.pass_obj
def fleet(obj: Any, as_json: bool) -> None:  # noqa: ANN401 — the CLI context object
    """Every terminal's health (state and since when, unsent sales, clock, version, disk,
    journal, last error) and the fleet's alerts."""
    now = int(obj.app.extensions["canteen_clock"].now_ms())
    data = report(obj.db(), now, limits_from_config(obj.app.config))
    emit(data, as_json, lines(data))
