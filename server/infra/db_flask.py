"""Flask wiring for the database and the clock: one connection per request, closed on
teardown; ``init_app`` registers that and the ``flask`` CLI hook (as in flaskr)."""

from __future__ import annotations

import sqlite3

from flask import Flask, current_app, g

from server.infra.db import open_db
from shared.clock import Clock, SystemClock


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = open_db(current_app.config["DATABASE"])
    return g.db


def get_clock() -> Clock:
    return current_app.extensions.get("canteen_clock") or SystemClock()


def close_db(exc: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def init_app(app: Flask, clock: Clock | None = None) -> None:
    app.teardown_appcontext(close_db)
    app.extensions["canteen_clock"] = clock or SystemClock()
