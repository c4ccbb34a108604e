"""What a scoped caller may touch: the one place where scopes are enforced.

``@requires(...)`` (server.infra.auth) decides which *roles* may call a view; the helpers here
decide which *objects* a caller of that role may touch:

========  ==============================================================================
admin     everything
auditor   everything, read-only (write views never list the auditor role)
clerk     the cardholders, cards and refund requests of their own unit (单位)
operator  the canteens whose operator (company) is theirs
diner     their own cardholder record and cards
========  ==============================================================================

The ``may_*`` predicates are pure functions of a :class:`~server.infra.auth.Principal` and the
object's owner; the ``require_*`` helpers read the owner from the database inside a view,
raise ``not_found`` / ``forbidden``, and return the row so the view need not read it again.
"""

from __future__ import annotations

import sqlite3

from flask import g

from server.infra.auth import Principal
from shared.errors import DomainError

UNRESTRICTED = frozenset({"admin", "auditor"})


def may_access_unit(who: Principal, unit_id: str) -> bool:
    return who.role in UNRESTRICTED or (who.role == "clerk" and who.unit_id == unit_id)


def may_access_holder(who: Principal, holder_id: str, holder_unit_id: str) -> bool:
    if who.role == "diner":
        return who.holder_id == holder_id
    return may_access_unit(who, holder_unit_id)


def may_access_canteen(who: Principal, canteen_unit_id: str, canteen_operator: str) -> bool:
    """Clerks see their own unit's canteens; operators the canteens they run."""
    if who.role == "operator":
        return bool(canteen_operator) and who.operator == canteen_operator
    return may_access_unit(who, canteen_unit_id)


def may_access_operator(who: Principal, operator: str) -> bool:
    return who.role in UNRESTRICTED or (who.role == "operator" and who.operator == operator)


def principal() -> Principal:
    who = g.get("principal")
    if who is None:  # a view called require_* without @requires: a programming error
        raise RuntimeError("scope check outside an authenticated view")
    return who


def _refuse(what: str) -> DomainError:
    return DomainError("forbidden", f"{what} is outside your scope")


def require_unit_access(conn: sqlite3.Connection, unit_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM units WHERE id = ?", (unit_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"unit {unit_id}")
    if not may_access_unit(principal(), unit_id):
        raise _refuse(f"unit {unit_id}")
    return row


def require_holder_access(conn: sqlite3.Connection, holder_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM holders WHERE id = ?", (holder_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"holder {holder_id}")
    if not may_access_holder(principal(), holder_id, row["unit_id"]):
        raise _refuse(f"holder {holder_id}")
    return row


def require_card_access(conn: sqlite3.Connection, card_id: str) -> sqlite3.Row:
    """The card joined with its holder's unit (``holder_id``, ``unit_id``, ``status``)."""
    row = conn.execute(
        "SELECT c.card_id, c.status, c.holder_id, h.unit_id FROM cards c "
        "JOIN holders h ON h.id = c.holder_id WHERE c.card_id = ?",
        (card_id,),
    ).fetchone()
    if row is None:
        raise DomainError("card_unknown", card_id)
    if not may_access_holder(principal(), row["holder_id"], row["unit_id"]):
        raise _refuse(f"card {card_id}")
    return row


def require_canteen_access(conn: sqlite3.Connection, canteen_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM canteens WHERE id = ?", (canteen_id,)).fetchone()
    if row is None:
        raise DomainError("unknown_canteen", canteen_id)
    if not may_access_canteen(principal(), row["unit_id"], row["operator"]):
        raise _refuse(f"canteen {canteen_id}")
    return row


def require_operator_access(operator: str) -> None:
    if not may_access_operator(principal(), operator):
        raise _refuse(f"operator {operator}")


def unit_filter() -> str | None:
    """For list views: the one unit a clerk may see, or None when the caller sees all.
    Callers of other scoped roles must not reach a unit-wide list (their @requires says so)."""
    who = principal()
    if who.role in UNRESTRICTED:
        return None
    if who.role == "clerk" and who.unit_id:
        return who.unit_id
    raise _refuse("this list")


def canteen_filter(conn: sqlite3.Connection) -> list[str] | None:
    """The canteens the caller may see: None = all (admin, auditor); an operator's own
    canteens; a clerk's own unit's canteens. Other roles see none."""
    who = principal()
    if who.role in UNRESTRICTED:
        return None
    if who.role == "operator":
        sql, arg = "SELECT id FROM canteens WHERE operator = ? AND operator <> ''", who.operator
    elif who.role == "clerk":
        sql, arg = "SELECT id FROM canteens WHERE unit_id = ?", who.unit_id
    else:
        raise DomainError("forbidden", "no canteens in your scope")
    return [r[0] for r in conn.execute(sql, (arg,))]
