"""Reading requests at the HTTP edge: JSON bodies, money fields, flags, uploaded CSV files.

Money in the API is integer fen (``price_fen``). Where a person types an amount, the yuan
twin is accepted instead (``price``: ``"12.50"``, at most two decimals, parsed by
:func:`shared.money.parse_yuan`); giving both is refused so nothing is ambiguous. Either way
an amount outside the range the system carries is refused here (``amount_out_of_range``).
"""

from __future__ import annotations

from typing import Any

from flask import g, request

from server.infra.auth import actor_id_of, actor_of

# the CSV limit is csvinput's, shared with the web console (re-exported for the API's views)
from server.infra.csvinput import MAX_UPLOAD_BYTES as MAX_UPLOAD_BYTES
from shared.amounts import check_fen
from shared.errors import DomainError
from shared.money import parse_yuan


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        body = {} if not request.get_data() else None
    if not isinstance(body, dict):
        raise DomainError("invalid_input", "the request body must be a JSON object")
    return body


def text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DomainError("invalid_input", f"{name} is required (text)")
    return value.strip()


def fen(body: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    """``<name>_fen`` (int) or ``<name>`` (yuan, ≤ 2 decimals) from a JSON body, within the
    range the system carries (:func:`shared.amounts.check_fen`, ``amount_out_of_range``)."""
    as_fen, as_yuan = body.get(f"{name}_fen"), body.get(name)
    if as_fen is not None and as_yuan is not None:
        raise DomainError("invalid_input", f"give {name}_fen or {name}, not both")
    if as_fen is not None:
        return check_fen(as_fen, f"{name}_fen")
    if as_yuan is not None:
        if isinstance(as_yuan, bool) or not isinstance(as_yuan, str | int | float):
            raise DomainError("bad_amount", f"{name}: {as_yuan!r}")
        return parse_yuan(as_yuan)
    if required:
        raise DomainError("invalid_input", f"{name}_fen (fen) or {name} (yuan) is required")
    return None


def flag(name: str) -> bool:
    """A query flag: ?dry_run=1 / true / yes."""
    return request.args.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def uploaded_file() -> bytes:
    """The CSV of an import: a multipart field ``file``, or the raw request body."""
    upload = request.files.get("file")
    data = upload.read(MAX_UPLOAD_BYTES + 1) if upload is not None else request.get_data()
    if not data:
        raise DomainError("invalid_input", "send the CSV file as the request body (or a form field 'file')")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DomainError("too_large", f"files up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    return data


def actor() -> str:
    """Who is acting, for records such as refund requests: 'admin', 'clerk:U01' …"""
    return actor_of(g.principal)


def actor_id() -> str:
    """Who is acting, down to the token: 'admin[张三]#3fa9c2d1e0b4' (:func:`actor_id_of`)."""
    return actor_id_of(g.principal)


SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1


def query_int(name: str, default: int | None = None) -> int:
    """An integer query parameter that SQLite can hold (a larger one is refused here, not
    by an OverflowError deep in a query); ``default`` when absent, required if None."""
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise DomainError("invalid_input", f"{name} (an integer) is required")
        return default
    try:
        value = int(raw)
    except ValueError as exc:  # also a number of more than 4,300 digits
        raise DomainError("invalid_input", f"{name} must be an integer") from exc
    if not SQLITE_INT_MIN <= value <= SQLITE_INT_MAX:
        raise DomainError("invalid_input", f"{name} out of range")
    return value
