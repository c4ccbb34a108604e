"""Logging for the long-running processes (``canteen-server run``, ``canteen-terminal run``):
plain text lines, or one JSON object per line (``--log-json`` / ``CANTEEN_LOG_JSON=1``) for a
log collector.

A JSON line (python-json-logger) has ``time`` (ISO 8601, Asia/Shanghai, milliseconds),
``level``, ``logger``, ``message``, and every field the code attached with ``extra=``:
``request_id`` on each HTTP request's lines, and the sale's id — ``terminal_id/seq``, the key
the server applies it by at most once — on its way from the tap (``sale_id``, terminal)
through the batch that carried it and its ack (``sale_ids``) to ingest (``sales``: id →
result). ``grep '"T0001/17"'`` over both logs follows one sale; ``canteen-server trace-sale
T0001/17`` takes it on to its ledger entries and statement.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import IO

from pythonjsonlogger.json import JsonFormatter

from shared.clock import china_datetime

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class ChinaTimeJsonFormatter(JsonFormatter):
    """JSON lines whose ``time`` is Asia/Shanghai local time with its offset."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 — logging's name
        return china_datetime(int(record.created * 1000)).isoformat(timespec="milliseconds")


def json_formatter() -> logging.Formatter:
    return ChinaTimeJsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        json_ensure_ascii=False,
    )


def configure(
    level: str = "INFO",
    *,
    json_lines: bool = False,
    stream: IO[str] | None = None,
    filters: Iterable[logging.Filter] = (),
) -> logging.Handler:
    """Send every log record at ``level`` and above to ``stream`` (stderr), as text or JSON
    lines; ``filters`` run on each record first (e.g. to stamp a request id on it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    for f in filters:
        handler.addFilter(f)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
