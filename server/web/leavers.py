"""Leavers and their refunds: record that a person left, register their own bank account,
ask for the self purse to be refunded to it, and approve or refuse the request.

The rules are :mod:`server.registry.leavers` (the same functions ``POST
/api/v1/holders/<id>/leave``, ``…/refunds`` and ``/refunds/<id>/approve`` call):

* leaving returns the subsidy to the unit at once and retires the cards; the self purse
  stays the person's until refunded to **their own** bank account — never in cash;
* a refund to an account changed within the last 30 days needs **two administrators**,
  neither of whom asked for it or changed the account: the first approval is recorded and
  pays nothing, the second pays (``second_approval_needed`` otherwise). Each administrator
  is told apart by their own web account (:func:`server.infra.auth.actor_id_of`).

Who: admin and a unit's clerk (their own staff) record leavers, accounts and requests;
only an administrator approves or refuses; the auditor reads the requests.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for

from server.books import ledger
from server.infra.auth import actor_id_of
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import principal, require_holder_access, unit_filter
from server.registry import leavers
from server.registry.people import holder_json
from server.web.blueprint import web_blueprint
from server.web.downloads import table_download
from server.web.fmt import yuan
from server.web.forms import explain, refuse_explained
from server.web.guard import page
from server.web.people import render_person
from server.web.person_forms import ActionForm, BankAccountForm, LeaveForm, RefundRequestForm, RejectForm
from server.web.tables import Column, Table, TableQuery, fetch, fetch_all, like
from shared.errors import DomainError

bp = web_blueprint("web_leavers", __name__)

STATUS_ZH = {"pending": "待审批", "approved": "已退款", "rejected": "未批准"}
REFUNDS = Table(
    name="refunds",
    columns=(
        Column("id", "编号", "r.id", "int", link=("web_leavers.refund", "request_id", "id")),
        Column("requested_at_ms", "申请时间", "r.requested_at_ms", "time"),
        Column("name", "姓名", "h.name", link=("web_leavers.refund", "request_id", "id")),
        Column("staff_no", "工号", "h.staff_no"),
        Column("unit_name", "单位", "u.name"),
        Column("status_zh", "状态", "r.status"),
        Column("amount_fen", "退款金额", "r.amount_fen", "fen"),
        Column("second", "需两人审批"),
    ),
    select_sql=(
        "SELECT r.id AS id, r.requested_at_ms AS requested_at_ms, h.name AS name, h.staff_no AS staff_no, "
        "u.name AS unit_name, r.status AS status, r.amount_fen AS amount_fen, "
        "r.first_approved_by AS first_approved_by, r.holder_id AS holder_id "
        "FROM refund_requests r JOIN holders h ON h.id = r.holder_id JOIN units u ON u.id = h.unit_id"
    ),
    default_sort="id",
    default_desc=True,
    tie_break="r.id",
    search_sql="(h.name LIKE ? ESCAPE '\\' OR h.staff_no = ?)",
    search_args=lambda q: [like(q), q],
    search_label="姓名或工号",
)


def _back(holder_id: str, anchor: str = "") -> Response:
    return redirect(url_for("web_people.person", holder_id=holder_id) + anchor)  # type: ignore[return-value]


# --- leaving -------------------------------------------------------------------------------


@bp.route("/people/<holder_id>/leave", methods=["GET", "POST"])
@page("admin", "clerk")
def leave(holder_id: str) -> Response | tuple[str, int]:
    """What leaving will do, and the confirmation: nothing happens until it is ticked."""
    conn = get_db()
    row = require_holder_access(conn, holder_id)
    form = LeaveForm()
    if row["status"] == "active" and form.validate_on_submit():
        with write_txn(conn):
            done = leavers.leave(conn, holder_id, get_clock().now_ms())
        flash(
            f"已办理离职：就餐经费 {yuan(done['subsidy_returned_fen'])} 已退回单位，"
            f"{len(done['cards_retired'])} 张卡已停用；自费余额 {yuan(done['self_fen'])} 保留，"
            "可申请退至本人银行卡。",
            "success",
        )
        return _back(holder_id)
    holder = holder_json(conn, row)
    unit = conn.execute("SELECT name FROM units WHERE id = ?", (row["unit_id"],)).fetchone()
    html = render_template(
        "registry/leave.html",
        holder=holder,
        unit_name=unit["name"] if unit else row["unit_id"],
        form=form,
        active_cards=[c for c in holder["cards"] if c["status"] == "active"],
    )
    return html, 400 if form.errors else 200


# --- the person's own bank account and the refund request ---------------------------------


@bp.post("/people/<holder_id>/bank-account")
@page("admin", "clerk")
def bank_account(holder_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_holder_access(conn, holder_id)
    form = BankAccountForm()
    if form.validate_on_submit():
        try:
            with write_txn(conn):
                leavers.set_bank_account(
                    conn,
                    holder_id,
                    form.bank_account.data,
                    now_ms=get_clock().now_ms(),
                    changed_by=actor_id_of(principal()),
                )
        except DomainError as exc:
            refuse_explained(form, exc, "bank_account")
        else:
            flash("已登记本人银行卡，变更已记录。", "success")
            return _back(holder_id, "#bank-h")
    return render_person(conn, row, bank=form)


@bp.post("/people/<holder_id>/refund")
@page("admin", "clerk")
def request_refund(holder_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_holder_access(conn, holder_id)
    form = RefundRequestForm()
    if form.validate_on_submit():
        account = (form.refund_bank_account.data or "").strip() or None
        try:
            with write_txn(conn):
                req = leavers.request_refund(
                    conn, holder_id, get_clock().now_ms(), actor_id_of(principal()), bank_account=account
                )
        except DomainError as exc:
            refuse_explained(form, exc, "refund_bank_account")
        else:
            flash(f"已提交退款申请（编号 {req['id']}），待管理员审批。", "success")
            return redirect(url_for("web_leavers.refund", request_id=req["id"]))  # type: ignore[return-value]
    return render_person(conn, row, refund=form)


# --- the requests and their approval -------------------------------------------------------


def _scope(status: str | None) -> tuple[str, list[Any]]:
    where, args = [], []
    unit = unit_filter()
    if unit:
        where.append("h.unit_id = ?")
        args.append(unit)
    if status in STATUS_ZH:
        where.append("r.status = ?")
        args.append(status)
    return " AND ".join(where), args


def _decorate(rows: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    conn = get_db()
    for r in rows:
        r["status_zh"] = STATUS_ZH.get(r["status"], r["status"])
        if r["status"] == "pending":
            recent = leavers.recent_account_changes(conn, r["holder_id"], now_ms)
            r["second"] = ("是，已有一人批准" if r["first_approved_by"] else "是") if recent else "否"
        else:
            r["second"] = ""
    return rows


@bp.get("/refunds")
@page("admin", "auditor", "clerk")
def refunds() -> str | Response:
    conn = get_db()
    status = request.args.get("status") or None
    where, args = _scope(status)
    query = TableQuery.from_args(REFUNDS, request.args)
    now = get_clock().now_ms()
    if request.args.get("format"):
        return table_download(
            REFUNDS, _decorate(fetch_all(conn, REFUNDS, query, where, args), now), "离职退款"
        )
    table = fetch(conn, REFUNDS, query, where, args)
    _decorate(table.rows, now)
    return render_template(
        "registry/refunds.html",
        table=table,
        status=status if status in STATUS_ZH else None,
        statuses=STATUS_ZH,
    )


def _request_page(conn: sqlite3.Connection, request_id: int, **forms: Any) -> tuple[str, int]:
    now = get_clock().now_ms()
    req = leavers.get_request(conn, request_id, now)
    row = require_holder_access(conn, req["holder_id"])  # a clerk: their own unit's requests only
    unit = conn.execute("SELECT name FROM units WHERE id = ?", (row["unit_id"],)).fetchone()
    shown = {"approve": ActionForm(formdata=None), "reject": RejectForm(formdata=None), **forms}
    html = render_template(
        "registry/refund.html",
        req=req,
        holder=row,
        unit_name=unit["name"] if unit else row["unit_id"],
        self_fen=ledger.balance(conn, ledger.self_purse(row["id"])),
        status_zh=STATUS_ZH,
        forms=shown,
    )
    refused = any(f.errors for f in forms.values())
    return html, (409 if "approve" in forms else 400) if refused else 200


@bp.get("/refunds/<int:request_id>")
@page("admin", "auditor", "clerk")
def refund(request_id: int) -> tuple[str, int]:
    return _request_page(get_db(), request_id)


@bp.post("/refunds/<int:request_id>/approve")
@page("admin")
def approve(request_id: int) -> Response | tuple[str, int]:
    conn = get_db()
    form = ActionForm()
    if form.validate_on_submit():
        try:
            with write_txn(conn):
                req = leavers.approve_refund(conn, request_id, get_clock().now_ms(), actor_id_of(principal()))
        except DomainError as exc:
            form.form_errors.append(explain(exc))
        else:
            if req["status"] == "approved":
                flash(f"已批准：{yuan(req['amount_fen'])} 退至本人银行卡 {req['bank_account']}。", "success")
            else:
                flash("已记录您的批准。该银行卡 30 天内有变更，还需另一位管理员批准后才退款。", "info")
            return redirect(url_for("web_leavers.refund", request_id=request_id))  # type: ignore[return-value]
    return _request_page(conn, request_id, approve=form)


@bp.post("/refunds/<int:request_id>/reject")
@page("admin")
def reject(request_id: int) -> Response | tuple[str, int]:
    conn = get_db()
    form = RejectForm()
    if form.validate_on_submit():
        try:
            with write_txn(conn):
                leavers.reject_refund(
                    conn, request_id, get_clock().now_ms(), actor_id_of(principal()), form.reason.data
                )
        except DomainError as exc:
            refuse_explained(form, exc, "reason")
        else:
            flash("已不予退款，原因已记录。", "success")
            return redirect(url_for("web_leavers.refund", request_id=request_id))  # type: ignore[return-value]
    return _request_page(conn, request_id, reject=form)
