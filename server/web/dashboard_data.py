"""What the bureau's dashboard shows, gathered from the reports the API and CLI already have.

:func:`dashboard` is a function of the database and the time: today's takings per canteen
and per payment method and the sales per 15 minutes today against the same weekday last week
— all read from the takings per day and per 15 minutes (:mod:`server.sales.takings`, kept
with the sales and checked against them), not from the day's sales — the terminals as the
server last heard from them, and the alerts — late or missing quarterly allocations (due the
10th), overdrawn cards, sales held for review and terminals flagged for them, QR/SUN
double-spend incidents, terminals behind the last quarter's end while it is not settled, and
the ledger check's last result. Reads only.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from server.books.periods import Quarter
from server.closing import reports
from server.closing.check import last_check
from server.closing.settlement import period_laggards
from server.sales import takings
from server.sales.ecny import with_refunds
from server.sales.incidents import incidents
from server.sales.quarantine import suspects
from shared.clock import DAY_MS, start_of_china_day_ms

SLOT_MS = takings.SLOT_MS
SLOTS_PER_DAY = DAY_MS // SLOT_MS
# a terminal is online when it says so and its last heartbeat (every 5 s) is at most this old
ONLINE_WITHIN_MS = 60_000
INCIDENT_DAYS = 30
TAKING_KEYS = ("count", "amount_fen", "subsidy_fen", "self_fen", "ecny_fen")


@dataclass(frozen=True)
class Series:
    label: str
    amounts_fen: list[int | None]  # one per slot of the day; None: not yet (the future)


def sales_by_slot(
    conn: sqlite3.Connection, day_start_ms: int, until_ms: int | None = None
) -> list[int | None]:
    """Applied sales' amount per 15 minutes of the Beijing day starting at ``day_start_ms``;
    slots from ``until_ms`` on are None (today's future)."""
    amounts: list[int | None] = [0] * SLOTS_PER_DAY
    for slot_ms, amount in takings.amounts(conn, day_start_ms, day_start_ms + DAY_MS).items():
        amounts[(slot_ms - day_start_ms) // SLOT_MS] = amount
    if until_ms is not None:
        first_future = max(0, -(-(until_ms - day_start_ms) // SLOT_MS))
        for i in range(first_future, SLOTS_PER_DAY):
            amounts[i] = None
    return amounts


def is_online(state: str, last_status_ms: int | None, now_ms: int) -> bool:
    """A terminal is online when its last status said so within :data:`ONLINE_WITHIN_MS`."""
    return state == "online" and last_status_ms is not None and now_ms - last_status_ms <= ONLINE_WITHIN_MS


def takings_of(conn: sqlite3.Connection, start_ms: int, end_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The takings of [start_ms, end_ms) (Beijing days) per canteen — count, amount, what
    the subsidy and self purses paid, digital RMB — largest first, with their totals; and per
    payment method with the digital RMB refunds (as :func:`server.sales.ecny.method_totals`)."""
    canteens = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, name, unit_id FROM canteens")}
    per_canteen: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TAKING_KEYS, 0))
    per_method: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "amount_fen": 0})
    for r in takings.day_rows(conn, start_ms, end_ms):
        c, m = per_canteen[r["canteen_id"]], per_method[r["method"]]
        c["count"] += r["count"]
        c["amount_fen"] += r["amount_fen"]
        c["subsidy_fen"] += r["subsidy_fen"]
        c["self_fen"] += r["self_fen"]
        c["ecny_fen"] += r["amount_fen"] if r["method"] == "ecny" else 0
        m["count"] += r["count"]
        m["amount_fen"] += r["amount_fen"]
    rows = [
        {
            "canteen_id": cid,
            "canteen_name": canteens.get(cid, (cid, ""))[0],
            "unit_id": canteens.get(cid, (cid, ""))[1],
            **v,
        }
        for cid, v in per_canteen.items()
    ]
    rows.sort(key=lambda r: (-r["amount_fen"], r["canteen_id"]))
    totals = {k: sum(r[k] for r in rows) for k in TAKING_KEYS}
    by_canteen = {"from_ms": start_ms, "to_ms": end_ms, "canteens": rows, "totals": totals}
    methods = with_refunds(conn, None, start_ms, end_ms, dict(sorted(per_method.items())))
    return by_canteen, methods


def terminals(conn: sqlite3.Connection, now_ms: int) -> list[dict[str, Any]]:
    """Every terminal in service: online or not, when it was last heard, unsent sales and its
    clock's offset from the server, as its last heartbeat said."""
    out = []
    for r in conn.execute(
        "SELECT t.id, t.canteen_id, c.name AS canteen_name, t.state, t.last_status_ms, t.watermark_ms, "
        "t.last_status_json FROM terminals t LEFT JOIN canteens c ON c.id = t.canteen_id "
        "WHERE t.state <> 'revoked' ORDER BY t.id"
    ):
        status = json.loads(r["last_status_json"]) if r["last_status_json"] else {}
        heard = r["last_status_ms"]
        online = is_online(r["state"], heard, now_ms)
        out.append(
            {
                "terminal_id": r["id"],
                "canteen_id": r["canteen_id"],
                "canteen_name": r["canteen_name"] or r["canteen_id"],
                "online": online,
                "last_status_ms": heard,
                "silent_ms": None if heard is None else max(0, now_ms - heard),
                "watermark_ms": r["watermark_ms"],
                "pending": status.get("pending"),
                "clock_offset_ms": status.get("clock_offset_ms"),
            }
        )
    return out


def _quarter_behind(conn: sqlite3.Connection, now_ms: int) -> dict[str, Any] | None:
    """The last ended quarter while it is not settled, with the terminals not yet past its end."""
    q = Quarter.of_ms(now_ms).prev()
    if conn.execute("SELECT 1 FROM settlement_periods WHERE quarter = ?", (str(q),)).fetchone():
        return None
    behind = [t for t in period_laggards(conn, q.end_ms) if t["state"] != "revoked"]
    return {"quarter": str(q), "end_ms": q.end_ms, "terminals": behind}


def alerts(conn: sqlite3.Connection, now_ms: int) -> dict[str, Any]:
    quarter = str(Quarter.of_ms(now_ms))
    allocation = reports.allocation_status(conn, quarter, now_ms)
    over = reports.overdrafts(conn)
    pending = conn.execute(
        "SELECT count(*), coalesce(sum(amount_fen), 0) FROM quarantined_sales WHERE state = 'pending'"
    ).fetchone()
    recent = incidents(conn, now_ms - INCIDENT_DAYS * DAY_MS)
    return {
        "quarter": quarter,
        "allocation_due_ms": allocation["due_ms"],
        "allocations": [u for u in allocation["units"] if u["status"] in ("late", "missing")],
        "overdrafts": {"holders": len(over["holders"]), "total_fen": over["total_overdrawn_fen"]},
        "quarantined": {"pending": pending[0], "amount_fen": pending[1]},
        "suspect_terminals": suspects(conn, now_ms),
        "incidents": {"count": len(recent), "latest": recent[-5:][::-1], "days": INCIDENT_DAYS},
        "quarter_behind": _quarter_behind(conn, now_ms),
        "ledger_check": last_check(conn),
    }


def dashboard(conn: sqlite3.Connection, now_ms: int) -> dict[str, Any]:
    today = start_of_china_day_ms(now_ms)
    last_week = today - 7 * DAY_MS
    by_canteen, by_method = takings_of(conn, today, today + DAY_MS)
    fleet = terminals(conn, now_ms)
    return {
        "now_ms": now_ms,
        "day_start_ms": today,
        "takings": by_canteen,
        "methods": by_method,
        "series": [
            Series("今日", sales_by_slot(conn, today, now_ms)),
            Series("上周同日", sales_by_slot(conn, last_week)),
        ],
        "terminals": fleet,
        "terminals_online": sum(t["online"] for t in fleet),
        "alerts": alerts(conn, now_ms),
    }
