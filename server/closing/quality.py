"""Quality: the units' scores, the canteens' pay bands, and the diners' ratings.

* **Quality score** (考核评价结果, 第十二条): the unit that owns a canteen scores its operator
  0–100 for a quarter. A score can be entered or corrected until that quarter is settled;
  then it is part of a closed statement and is refused with ``period_closed``.
* **Quality bands**: per canteen, ``[[min_score, pay_pct], …]`` (see
  :mod:`server.books.settlement_rules`); none configured means pay 100 %.
* **Ratings** (方案 三(一)4): a diner rates service and food 1–5 (optional comment, at most
  200 characters) for one of their own applied sales, once per sale. Averages per canteen
  and quarter (of the sale) feed the quality report. Averages are given as text with two
  decimals ("4.25"), computed in integers, next to the sums and counts they come from.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from server.books.periods import Quarter
from server.books.settlement_rules import DEFAULT_BANDS, Bands, pay_pct, validate_bands
from shared.errors import DomainError
from shared.money import round_half_up_div

MAX_COMMENT_CHARS = 200


def _canteen(conn: sqlite3.Connection, canteen_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM canteens WHERE id = ?", (canteen_id,)).fetchone()
    if row is None:
        raise DomainError("unknown_canteen", canteen_id)
    return row


def set_bands(conn: sqlite3.Connection, canteen_id: str, raw: object) -> Bands:
    """Configure a canteen's quality bands (call inside a write txn)."""
    _canteen(conn, canteen_id)
    bands = validate_bands(raw)
    conn.execute(
        "INSERT INTO quality_bands(canteen_id, bands_json) VALUES (?, ?) "
        "ON CONFLICT(canteen_id) DO UPDATE SET bands_json = excluded.bands_json",
        (canteen_id, json.dumps([list(b) for b in bands])),
    )
    return bands


def bands_of(conn: sqlite3.Connection, canteen_id: str) -> Bands:
    row = conn.execute("SELECT bands_json FROM quality_bands WHERE canteen_id = ?", (canteen_id,)).fetchone()
    return tuple(tuple(b) for b in json.loads(row[0])) if row else DEFAULT_BANDS  # type: ignore[misc]


def set_score(
    conn: sqlite3.Connection, canteen_id: str, quarter: str, score: int, now_ms: int, entered_by: str = ""
) -> dict[str, Any]:
    """Enter (or correct) a canteen's quality score for a quarter that is not yet settled."""
    canteen = _canteen(conn, canteen_id)
    q = Quarter.parse(quarter)
    if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 100:
        raise DomainError("invalid_input", "score must be an integer 0..100")
    if conn.execute("SELECT 1 FROM settlement_periods WHERE quarter = ?", (str(q),)).fetchone():
        raise DomainError("period_closed", f"{q} is settled; its scores are final")
    conn.execute(
        "INSERT INTO quality_scores(canteen_id, quarter, score, entered_at_ms, entered_by) "
        "VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT(canteen_id, quarter) DO UPDATE SET score = excluded.score, "
        "entered_at_ms = excluded.entered_at_ms, entered_by = excluded.entered_by",
        (canteen_id, str(q), score, now_ms, entered_by),
    )
    return {
        "canteen_id": canteen_id,
        "unit_id": canteen["unit_id"],
        "quarter": str(q),
        "score": score,
        "pay_pct": pay_pct(score, bands_of(conn, canteen_id)),
    }


def score_of(conn: sqlite3.Connection, canteen_id: str, quarter: str) -> int | None:
    row = conn.execute(
        "SELECT score FROM quality_scores WHERE canteen_id = ? AND quarter = ?", (canteen_id, quarter)
    ).fetchone()
    return int(row[0]) if row else None


def pay_pct_for(conn: sqlite3.Connection, canteen_id: str, quarter: str) -> int:
    """The pay percentage of a canteen's quarter: as settled if that statement exists,
    else from the score and bands now."""
    row = conn.execute(
        "SELECT pay_pct FROM statements WHERE quarter = ? AND canteen_id = ?", (quarter, canteen_id)
    ).fetchone()
    if row is not None:
        return int(row[0])
    return pay_pct(score_of(conn, canteen_id, quarter), bands_of(conn, canteen_id))


# --- ratings -----------------------------------------------------------------------------


def rate(
    conn: sqlite3.Connection,
    holder_id: str,
    sale_uuid: str,
    service: int,
    food: int,
    comment: str,
    now_ms: int,
) -> dict[str, Any]:
    """A diner's rating of one of their own applied sales (once per sale)."""
    for name, value in (("service", service), ("food", food)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
            raise DomainError("invalid_input", f"{name} must be an integer 1..5")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise DomainError("invalid_input", f"comment longer than {MAX_COMMENT_CHARS} characters")
    sale = conn.execute(
        "SELECT terminal_id, seq, holder_id, canteen_id, occurred_at_ms FROM sales "
        "WHERE uuid = ? AND status = 'applied'",
        (sale_uuid,),
    ).fetchone()
    if sale is None:
        raise DomainError("not_found", f"sale {sale_uuid}")
    if sale["holder_id"] != holder_id:
        raise DomainError("not_your_sale", sale_uuid)
    if conn.execute(
        "SELECT 1 FROM ratings WHERE terminal_id = ? AND seq = ?", (sale["terminal_id"], sale["seq"])
    ).fetchone():
        raise DomainError("already_rated", sale_uuid)
    quarter = str(Quarter.of_ms(sale["occurred_at_ms"]))
    conn.execute(
        "INSERT INTO ratings(terminal_id, seq, holder_id, canteen_id, quarter, "
        "service, food, comment, at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            sale["terminal_id"],
            sale["seq"],
            holder_id,
            sale["canteen_id"],
            quarter,
            service,
            food,
            comment,
            now_ms,
        ),
    )
    return {
        "sale_uuid": sale_uuid,
        "canteen_id": sale["canteen_id"],
        "quarter": quarter,
        "service": service,
        "food": food,
    }


def average_text(total: int, count: int) -> str | None:
    """``total / count`` with two decimals, half up, computed in integers ("4.25")."""
    if count == 0:
        return None
    hundredths = round_half_up_div(total * 100, count)
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def quality_report(
    conn: sqlite3.Connection, quarter: str, canteen_ids: list[str] | None = None
) -> dict[str, Any]:
    """Per canteen for a quarter: score, pay %, bands, and the diners' average ratings."""
    q = str(Quarter.parse(quarter))
    ratings = {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT canteen_id, count(*), sum(service), sum(food) FROM ratings "
            "WHERE quarter = ? GROUP BY canteen_id",
            (q,),
        )
    }
    rows = []
    for c in conn.execute("SELECT id, name, unit_id, operator FROM canteens ORDER BY id"):
        if canteen_ids is not None and c["id"] not in canteen_ids:
            continue
        count, service, food = ratings.get(c["id"], (0, 0, 0))
        score = score_of(conn, c["id"], q)
        rows.append(
            {
                "canteen_id": c["id"],
                "canteen_name": c["name"],
                "unit_id": c["unit_id"],
                "operator": c["operator"],
                "score": score,
                "bands": [list(b) for b in bands_of(conn, c["id"])],
                "pay_pct": pay_pct_for(conn, c["id"], q),
                "ratings": count,
                "service_sum": service,
                "food_sum": food,
                "service_avg": average_text(service, count),
                "food_avg": average_text(food, count),
            }
        )
    return {"quarter": q, "canteens": rows}
