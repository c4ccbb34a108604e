"""People (staff side): search cardholders, open one, print a diner's activation code.

A person's page also carries the card, bank account and leaver forms of
:mod:`server.web.person_forms` (their views: :mod:`server.web.cards`, :mod:`server.web.leavers`);
:func:`render_person` draws it, with a refused form's reasons beside its fields.

The patterns the other console pages follow, in one module:

* a **table** sorted, searched and paged by the server, with **CSV / Excel downloads** of the
  same rows (:data:`PEOPLE`, :func:`search`);
* the **scope check** of the API in a page: ``require_holder_access`` — a clerk opening a
  person of another unit gets the 403 page (:func:`person`);
* a **form** whose action changes something, refused for a role that may only read (the
  auditor's 403) and shown once on a printable page (:func:`activation`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from flask import Response, render_template, request

from server.books import ledger
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal, require_holder_access, unit_filter
from server.registry import name_search
from server.registry.people import holder_json
from server.web import accounts, history, person_forms
from server.web.blueprint import web_blueprint
from server.web.downloads import table_download
from server.web.forms import Form
from server.web.guard import page
from server.web.tables import Column, Table, TableQuery, fetch, fetch_all, like

bp = web_blueprint("web_people", __name__)

PEOPLE = Table(
    name="people",
    columns=(
        Column("staff_no", "工号", "h.staff_no", link=("web_people.person", "holder_id", "id")),
        Column("name", "姓名", "h.name", link=("web_people.person", "holder_id", "id")),
        Column("unit_name", "单位", "u.name"),
        Column("status_zh", "状态", "h.status"),
        Column("cards", "卡号"),
        Column("self_fen", "自费余额", "self_fen", "fen"),
    ),
    select_sql=(
        "SELECT h.id AS id, h.staff_no AS staff_no, h.name AS name, u.name AS unit_name, "
        "h.status AS status, CASE h.status WHEN 'left' THEN '已离职' ELSE '在职' END AS status_zh, "
        "(SELECT group_concat(card_id, ' ') FROM cards c WHERE c.holder_id = h.id AND c.status = 'active') "
        "AS cards, coalesce((SELECT balance_fen FROM accounts a "
        f"WHERE a.id = {ledger.purse_id_sql('h.id', 'self')}), 0) AS self_fen "
        "FROM holders h JOIN units u ON u.id = h.unit_id"
    ),
    default_sort="staff_no",
    tie_break="h.id",
    # a 工号, card number or holder id (as typed, or in capitals) is found by index; only when
    # nothing matches exactly is the name searched for the text anywhere in it (a scan)
    exact_sql=(
        "(h.staff_no IN (?, ?) OR h.id IN (?, ?) "
        "OR h.id IN (SELECT holder_id FROM cards WHERE card_id IN (?, ?)))"
    ),
    exact_args=lambda q: [q, q.upper(), q, q.upper(), q, q.upper()],
    search_sql="(h.name LIKE ? ESCAPE '\\')",
    search_args=lambda q: [like(q)],
    search_label="姓名、工号或卡号",
)


def _scope() -> tuple[str, list[str]]:
    unit = unit_filter()
    return ("h.unit_id = ?", [unit]) if unit else ("", [])


@bp.get("/people")
@page("admin", "auditor", "clerk")
def search() -> str | Response:
    conn = get_db()
    query = TableQuery.from_args(PEOPLE, request.args)
    where, args = _scope()
    table, total = PEOPLE, None
    if query.q:  # part of a name: through the name index (server.registry.name_search)
        found = name_search.plan(conn, query.q, scoped=bool(where))
        table = replace(PEOPLE, search_sql=found.sql, search_args=lambda _q: found.args)
        total = found.total
    if request.args.get("format"):
        return table_download(PEOPLE, fetch_all(conn, table, query, where, args), "人员名单")
    return render_template(
        "web/people.html", people=fetch(conn, table, query, where, args, search_total=total)
    )


@bp.get("/people/<holder_id>")
@page("admin", "auditor", "clerk")
def person(holder_id: str) -> str | Response:
    conn = get_db()
    row = require_holder_access(conn, holder_id)
    if request.args.get("format"):
        query = TableQuery.from_args(history.HISTORY, request.args)
        rows = history.decorate(fetch_all(conn, history.HISTORY, query, history.WHERE, [holder_id]))
        return table_download(history.HISTORY, rows, f"消费记录-{row['staff_no'] or holder_id}")
    return render_person(conn, row)[0]


def render_person(conn: sqlite3.Connection, row: sqlite3.Row, **forms: Form) -> tuple[str, int]:
    """The person's page; ``forms``: a form sent back with its reasons (400), the others empty.
    Its card, bank account and leaver forms are :mod:`server.web.person_forms`."""
    holder_id = row["id"]
    now = get_clock().now_ms()
    query = TableQuery.from_args(history.HISTORY, request.args)
    sales = fetch(conn, history.HISTORY, query, history.WHERE, [holder_id])
    history.decorate(sales.rows)
    unit = conn.execute("SELECT name FROM units WHERE id = ?", (row["unit_id"],)).fetchone()
    holder = holder_json(conn, row)
    shown = {**person_forms.default_forms(holder), **forms}
    person_forms.card_choices(shown["replace"], holder)  # type: ignore[arg-type]
    html = render_template(
        "web/person.html",
        holder=holder,
        unit_name=unit["name"] if unit else row["unit_id"],
        sales=sales,
        web_login=accounts.activation_state(conn, holder_id, now),
        forms=shown,
        replaceable=person_forms.replaceable(holder["cards"]),
        refunds=person_forms.refund_requests(conn, holder_id, now),
        may_act=principal().role in ("admin", "clerk"),
    )
    return html, 400 if any(f.errors for f in forms.values()) else 200


@bp.post("/people/<holder_id>/activation")
@page("admin", "clerk")
def activation(holder_id: str) -> str:
    """A new one-time activation code for the person, on a page to print and hand over."""
    conn = get_db()
    require_holder_access(conn, holder_id)
    with write_txn(conn):
        issued = accounts.issue_activation(conn, holder_id, get_clock().now_ms(), principal().label)
    return render_template("web/activation_slip.html", a=issued)
