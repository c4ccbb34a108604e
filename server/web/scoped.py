"""What a console page offers the caller to choose from, within their scope."""

from __future__ import annotations

import sqlite3
from typing import Any


def canteens_of(conn: sqlite3.Connection, scope: list[str] | None) -> list[dict[str, Any]]:
    """The id and name of the canteens in ``scope`` (:func:`server.infra.scope.canteen_filter`'s:
    None = all), by id."""
    return [
        dict(r)
        for r in conn.execute("SELECT id, name FROM canteens ORDER BY id")
        if scope is None or r["id"] in scope
    ]
