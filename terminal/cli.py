"""``canteen-terminal``: run a terminal, and the operator's views of it.

* ``run`` — sync with the server and serve payments until stopped: taps from the configured
  reader (``stdin`` lines, a ``fifo:``, an ``nfc:`` reader), codes from the QR scanner,
  digital RMB through the gateway, screens on the configured display (``terminal.devices``,
  ``hardware.devices``); with ``--events`` one JSON line per event on stdout (``ready``,
  ``approved`` — written only after the sale is on disk —, ``recovered``, ``declined``,
  ``operator``, ``link``, ``bad_tap``; at a shop counter ``basket``, ``basket_refused``,
  ``mode``; the operator's ``operator_menu`` and ``day_close``) and a console display on stderr.
* ``totals`` — the day's totals of this terminal, in Chinese (``--json`` for machines).
* ``closes`` — the day closes (日结, Z-reports) kept on this terminal and the server's
  answer to each (:mod:`terminal.day_close`).
* ``status`` — online or OFFLINE, unsent sales, watermark, last sync, clock offset, the
  software version and what became of the last update offered.
* ``resend --since SEQ`` — put journaled sales after SEQ back in the outbox (after the
  server's database was restored; ``terminal.journal_keep``).

Signed updates (``terminal.updater``) run inside ``run`` when the configuration names a
release key and an update folder and ``canteen-terminal-launcher`` started it: after
switching to a new version between sales, ``run`` exits with
:data:`~terminal.update_layout.RESTART_EXIT_CODE` and the launcher starts the new version.
* ``enrol`` — set up a new terminal with the one-time code from ``canteen-server
  provision-terminal``: its configuration (with its secret) is fetched over HTTPS and
  written 0600 to ``--config``; the code is spent.

``--config`` may also come from ``CANTEEN_TERMINAL_CONFIG``; relative paths in the file are
taken from the file's folder. Exit codes: 0 ok, 1 error, 2 bad input — one line in Chinese
and English, no traceback: a missing, malformed or incomplete configuration (naming the file
and the key; an unknown reader, scanner, gateway or display too), a bad date, and for
``totals``/``status`` a terminal database that does not exist (they never create one).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import click

from hardware.devices import open_devices
from shared.cli_edge import DomainGroup
from shared.clock import SystemClock, china_datetime
from shared.errors import DomainError, message
from shared.log_setup import configure as configure_logging
from shared.money import format_fen
from shared.sd_notify import Watchdog, notify
from terminal import journal_keep
from terminal.agent import Terminal
from terminal.config import TerminalConfig
from terminal.day_close import kept_closes
from terminal.devices import DeviceLoop, check_config
from terminal.enrol import enrol_terminal
from terminal.face_pay import FacePay
from terminal.metrics import TerminalMetrics
from terminal.readers import LINE_FORMATS
from terminal.store import Store
from terminal.totals import day_totals, render_zh
from terminal.update_layout import LAUNCHER_ENV, RESTART_EXIT_CODE, Layout, running_version
from terminal.updater import Updater

log = logging.getLogger(__name__)

CONFIG = click.option(
    "--config",
    "config_path",
    required=True,
    envvar="CANTEEN_TERMINAL_CONFIG",
    type=click.Path(dir_okay=False),
    help="Terminal config JSON (from provision-terminal); default $CANTEEN_TERMINAL_CONFIG.",
)


JSON_FLAG = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.group(cls=DomainGroup)
def main() -> None:
    """Canteen one-card terminal agent (食堂一卡通 消费终端)."""


@contextmanager
def _existing_store(config: TerminalConfig, config_path: str) -> Iterator[Store]:
    """The terminal's database, which must exist (an operator's view never creates one),
    open for the ``with`` block and closed after it."""
    where = f"{config.db_path} (db_path in {config_path})"
    if not Path(config.db_path).is_file():
        raise DomainError(
            "terminal_db_missing", f"{where}; start the terminal with `canteen-terminal run` first"
        )
    try:
        store = Store(config.db_path)
    except sqlite3.DatabaseError as exc:
        raise DomainError("config_invalid", f"{where} is not a terminal database ({exc})") from exc
    try:
        yield store
    finally:
        store.close()


def _tap_lines_help() -> str:
    width = max(len(example) for _, example, _ in LINE_FORMATS if not example.startswith("{"))
    lines = [
        f"  {example:<{width}}  {meaning}"
        if not example.startswith("{")
        else f"  {example}\n  {'':<{width}}  {meaning}"
        for _, example, meaning in LINE_FORMATS
    ]
    return "\b\n" + "\n".join(lines)


RUN_HELP = f"""Run the terminal: sync with the server and serve taps until stopped (SIGTERM/Ctrl-C).

With reader "stdin" or "fifo:<path>" each line is one tap (刷卡输入格式), one of:

{_tap_lines_help()}

A malformed line is reported (bad_tap) and skipped.
"""


class _EventWriter:
    """One JSON object per line, each written with a single write and flushed."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


@main.command(help=RUN_HELP)
@CONFIG
@click.option(
    "--events/--no-events",
    default=False,
    help="Write one JSON line per event on stdout (display goes to stderr).",
)
@click.option(
    "--log-level",
    envvar="CANTEEN_LOG_LEVEL",
    default="INFO",
    show_default=True,
    help="Logging level (logs go to stderr).",
)
@click.option(
    "--log-json/--no-log-json",
    envvar="CANTEEN_LOG_JSON",
    default=False,
    help="Logs as one JSON object per line, with each sale's id; env CANTEEN_LOG_JSON=1.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (/metrics): taps, declines, unsent, sync lag.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address for --metrics-port (0.0.0.0: reachable by the fleet's Prometheus).",
)
def run(
    config_path: str,
    events: bool,
    log_level: str,
    log_json: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    configure_logging(log_level, json_lines=log_json, stream=sys.stderr)
    config = TerminalConfig.load(config_path)
    version = running_version()
    config = replace(config, software=f"canteen-terminal/{version}")  # what runs, as its status says
    emit = _EventWriter(sys.stdout) if events else (lambda event: None)
    try:
        check_config(config)
        devices = open_devices(
            config.display, config.camera, config.face_engine, console=sys.stderr if events else sys.stdout
        )
    except ValueError as exc:
        raise DomainError("config_invalid", f"{config_path}: {exc}") from exc
    except DomainError as exc:
        raise DomainError("config_invalid", f"{config_path}: {exc.code}: {exc.detail}") from exc
    if config.reader == "simulated":
        log.warning(
            "reader 'simulated' is fed in-process: no taps will come from it here "
            "(use stdin, fifo:<path> or nfc:<device>)"
        )
    clock = SystemClock(config.clock_offset_ms)  # offset: a simulated wrong clock (0 in production)
    observers: list[Any] = [emit]
    terminal = Terminal(
        config,
        clock,
        display=devices.display,
        on_event=lambda e: [o(e) for o in observers],
        config_path=config_path,
    )
    exporter = None
    if metrics_port is not None:
        exporter = TerminalMetrics(terminal).serve(metrics_port, metrics_host)
        observers.append(exporter.observe)
        log.info("metrics on http://%s:%d/metrics", metrics_host, exporter.port)
    done, restart = threading.Event(), threading.Event()
    updater = Updater(
        config,
        running=version,
        layout=Layout(Path(config.update_root)) if config.update_root else None,
        under_launcher=bool(os.environ.get(LAUNCHER_ENV)),
        download=lambda kind, v: terminal.sync.http.bundle(
            kind, v, clock.now_ms() + (terminal.sync.clock_offset_ms or 0)
        ),
        send_report=terminal.sync.send_update_report,
        when_idle=terminal.when_idle,
        restart=lambda: (restart.set(), done.set()),
        clock=clock,
        board=devices.display if hasattr(devices.display, "flash_firmware") else None,
        on_event=emit,
    )
    terminal.sync.on_update_offer = updater.offer
    terminal.sync.on_report_ack = updater.acked
    terminal.start()
    updater.start()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    payments = None
    try:
        # the card reader (or tap lines), the QR scanner and the digital RMB gateway
        payments = DeviceLoop.from_config(terminal, config, stdin=sys.stdin)
        if config.display.startswith("board"):  # the board's keypad: PIN, cashier, operator menu
            payments.keypad = devices.keypad
        if devices.camera is not None and devices.face_engine is not None:  # face pay on the 刷脸 key
            payments.keypad = devices.keypad
            payments.face_pay = FacePay(terminal, devices.camera, devices.face_engine, devices.keypad)
        emit({"event": "ready", "terminal_id": config.terminal_id})
        payments.start()
        notify("READY=1")  # under systemd (Type=notify): serving taps now
        watchdog = Watchdog(lambda: terminal.sync.alive).start()
        done.wait()
        notify("STOPPING=1")
        watchdog.stop()
    except KeyboardInterrupt:
        pass
    finally:
        if payments is not None:
            payments.stop()
        updater.stop()
        terminal.stop()
        devices.close()
        if exporter is not None:
            exporter.stop()
    if restart.is_set():  # switched to a new version between sales: the launcher starts it
        sys.exit(RESTART_EXIT_CODE)


@main.command()
@CONFIG
@click.option("--date", "day", default=None, help="Day (YYYY-MM-DD, Asia/Shanghai); default today.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def totals(config_path: str, day: str | None, as_json: bool) -> None:
    """Print the day's totals of this terminal (当日汇总) in Chinese."""
    config = TerminalConfig.load(config_path)
    try:
        the_day = date.fromisoformat(day) if day else china_datetime(SystemClock().now_ms()).date()
    except ValueError as exc:
        raise click.BadParameter(f"{day!r} is not YYYY-MM-DD", param_hint="--date") from exc
    with _existing_store(config, config_path) as store:
        t = day_totals(
            store,
            the_day,
            config.canteen_id,
            config.terminal_id,
            online=store.get_meta("link_state") == "online",
        )
    click.echo(json.dumps(t.to_json(), ensure_ascii=False, indent=2) if as_json else render_zh(t))


SERVER_ZH = {
    "matched": "服务器核对一致",
    "waiting": "服务器等待交易上传",
    "mismatch": "服务器核对不一致",
    "refused": "服务器拒收",
}


@main.command()
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def closes(config_path: str, as_json: bool) -> None:
    """The day closes (日结, Z-reports) kept on this terminal and the server's answers."""
    config = TerminalConfig.load(config_path)
    with _existing_store(config, config_path) as store:
        kept = kept_closes(store.conn)
    if as_json:
        click.echo(json.dumps(kept, ensure_ascii=False, indent=2))
        return
    if not kept:
        click.echo(f"终端 {config.terminal_id} 尚无日结 (no day close yet)")
    for c in kept:
        z, server = c["report"], c["server"] or {}
        status = str(server.get("status"))
        answer = (
            "未上传 not sent yet" if c["sent_at_ms"] is None else f"{SERVER_ZH.get(status, status)} {status}"
        )
        if server.get("code"):
            answer += f"（{server['code']}）"
        click.echo(
            f"Z{z['number']:04d} {z['business_day']} 消费 {z['sales']['count']} 笔 "
            f"{format_fen(z['sales']['amount_fen'])} 冲正 {z['reversals']['count']} 笔 "
            f"净额 {format_fen(z['net_fen'])} · {answer}"
        )


@main.command()
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: str, as_json: bool) -> None:
    """Show whether the terminal is online (or OFFLINE), its unsent sales and last sync."""
    config = TerminalConfig.load(config_path)
    with _existing_store(config, config_path) as store:
        info = {
            "terminal_id": config.terminal_id,
            "canteen_id": config.canteen_id,
            "state": store.get_meta("link_state") or "offline",
            "offline_since_ms": _int(store.get_meta("offline_since_ms")),
            "last_sync_ms": _int(store.get_meta("last_sync_ms")),
            "unsent_sales": store.pending_count(),
            "oldest_unsent_ms": store.oldest_pending_ms(),
            "delta_version": store.delta_version,
            "clock_offset_ms": _int(store.get_meta("clock_offset_ms")),
            # another running process with this terminal's configuration, if one was seen
            "identity_conflict": _json(store.get_meta("identity_conflict")),
            # the version the agent last ran, and what became of the last update of each kind
            "software_version": store.get_meta("software_version"),
            "update": _json(store.get_meta("update_terminal")),
            "firmware_update": _json(store.get_meta("update_firmware")),
            # the last error the sync agent noted: [stable code, when] (also in its status)
            "last_error": _json(store.get_meta("last_error")),
        }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return
    when = lambda ms: china_datetime(ms).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"  # noqa: E731
    state = "在线 online" if info["state"] == "online" else "【离线 OFFLINE】"
    click.echo(f"终端 {info['terminal_id']} · 食堂 {info['canteen_id']} · {state}")
    if info["state"] != "online":
        click.echo(f"  离线开始 offline since  {when(info['offline_since_ms'])}")
    click.echo(f"  未上传 unsent sales     {info['unsent_sales']}")
    click.echo(f"  最早未上传 oldest unsent {when(info['oldest_unsent_ms'])}")
    click.echo(f"  上次同步 last sync      {when(info['last_sync_ms'])}")
    click.echo(f"  数据版本 delta version  {info['delta_version']}")
    offset = info["clock_offset_ms"]
    click.echo(f"  时钟偏差 clock offset   {'-' if offset is None else f'{offset:+d} ms'}")
    click.echo(f"  软件版本 software        {info['software_version'] or '-'}")
    for label, update in (
        ("软件更新 update", info["update"]),
        ("固件更新 firmware", info["firmware_update"]),
    ):
        if update:
            code = update.get("code")
            why = f" 【{message(code)}】({code})" if code else ""
            what = f"{update.get('version')} {update.get('state')}"
            click.echo(f"  {label:<17} {what} {when(update.get('at_ms'))}{why}")
    if info["last_error"]:
        code, at_ms = info["last_error"]
        click.echo(f"  最近错误 last error     {code} ({when(at_ms)})")
    if info["identity_conflict"]:
        click.echo(
            f"  【{message('terminal_identity_duplicate')}】 another process runs this terminal's "
            f"configuration (instance {info['identity_conflict'].get('other', '?')})"
        )


@main.command()
@CONFIG
@click.option(
    "--since",
    "since_seq",
    required=True,
    type=click.IntRange(min=0),
    help="Send again every journaled sale with a sequence number above this one.",
)
def resend(config_path: str, since_seq: int) -> None:
    """Send sales again from the journal (重发交易): after the server's database was restored
    from a backup that lacks sales this terminal already had acknowledged.

    The running terminal sends them with its next batch (a stopped one when it starts); the
    server applies those it lacks, once, and answers the others as duplicates. A restored
    server asks for this by itself; this is the same by hand."""
    config = TerminalConfig.load(config_path)
    with _existing_store(config, config_path) as store:
        n = journal_keep.requeue_after(store, since_seq)
        first = store.conn.execute("SELECT min(seq) FROM journal").fetchone()[0]
    click.echo(f"已重新排队 {n} 笔交易 queued {n} sale(s) after seq {since_seq} to send again")
    if first is not None and first > since_seq + 1:
        click.echo(
            f"注意：日志最早一笔为 {first}，更早的已清理 note: the journal starts at seq {first}; "
            "earlier sales were pruned after the server confirmed a backup held them",
            err=True,
        )


@main.command()
@click.argument("code")
@click.option(
    "--server", "server_url", required=True, help="The server, https://… (as this terminal reaches it)."
)
@click.option(
    "--config",
    "config_path",
    required=True,
    envvar="CANTEEN_TERMINAL_CONFIG",
    type=click.Path(dir_okay=False),
    help="Where to write the configuration (0600); default $CANTEEN_TERMINAL_CONFIG. Must not exist.",
)
@click.option("--ca-file", default="", help="The deployment's CA certificate (default: the system's CAs).")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A further setting for the configuration (reader=nfc:usb, display=board:/dev/ttyACM0 …).",
)
@JSON_FLAG
def enrol(
    code: str, server_url: str, config_path: str, ca_file: str, settings: tuple[str, ...], as_json: bool
) -> None:
    """Enrol this terminal with a one-time code (注册终端): fetch its configuration over HTTPS
    and write it, with its secret, readable by its owner only. The code works once."""
    config = enrol_terminal(server_url, code, config_path, ca_file=ca_file, settings=settings)
    if as_json:
        click.echo(
            json.dumps(
                {"terminal_id": config.terminal_id, "canteen_id": config.canteen_id, "config": config_path}
            )
        )
        return
    click.echo(
        f"终端 {config.terminal_id}（食堂 {config.canteen_id}）已注册 enrolled: "
        f"配置已写入 config written to {config_path} (0600)"
    )
    click.echo(f"启动 start it: canteen-terminal run --config {config_path}")


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


if __name__ == "__main__":
    main()
