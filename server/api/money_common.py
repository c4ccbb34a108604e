"""Request helpers shared by the money blueprints: periods from the query string, which
canteens a caller may see, CSV responses."""

from __future__ import annotations

from urllib.parse import quote

from flask import Response, request

from server.books.periods import Quarter, day_bounds_ms, day_of_ms, parse_year
from server.infra.db_flask import get_clock

# canteen_filter is the scope rule (server.infra.scope), re-exported for the API's views
from server.infra.scope import canteen_filter as canteen_filter
from server.infra.scope import principal
from shared.errors import DomainError

QUARTER_QUERY = {
    "quarter": {
        "type": "string",
        "pattern": "^[0-9]{4}Q[1-4]$",
        "description": "default: the current quarter",
    }
}
DATE_QUERY = {"date": {"type": "string", "format": "date", "description": "Beijing date; default: today"}}


def quarter_arg(value: str | None = None) -> Quarter:
    raw = value if value is not None else request.args.get("quarter")
    return Quarter.parse(raw) if raw else Quarter.of_ms(get_clock().now_ms())


def day_arg() -> tuple[str, int, int]:
    day = request.args.get("date") or day_of_ms(get_clock().now_ms())
    start, end = day_bounds_ms(day)
    return day, start, end


def year_arg(value: str) -> int:
    return parse_year(value)


def unit_scope() -> str | None:
    """A clerk's own unit (their lists are filtered to it); None for admin and auditor."""
    who = principal()
    return who.unit_id if who.role == "clerk" else None


def flag_value(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise DomainError("invalid_input", f"{name} must be true or false")
    return value


def csv_response(text: str, filename: str) -> Response:
    resp = Response(text, mimetype="text/csv")
    resp.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
    return resp
