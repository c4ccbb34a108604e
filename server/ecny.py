"""Digital RMB (数字人民币) at the server (filled in below)."""

from __future__ import annotations

import sqlite3

from shared.protocol import Sale


def note_ecny_sale(conn: sqlite3.Connection, sale: Sale, order_no: str, now_ms: int) -> None:
    return None
