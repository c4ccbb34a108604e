"""Card actions on a person's page (admin; a clerk for their own unit's staff): report a card
lost (挂失, blocked at every terminal from the next delta), found again, replace it (补卡: the
purses stay with the person), issue a first card.

Each view checks the person with the API's scope check (``require_holder_access``) and calls
the registry's own function (:mod:`server.registry.cards`) in one write transaction, exactly
as ``POST /api/v1/cards/<id>/lost`` … do; a refusal changes nothing and comes back on the
person's page beside the field.
"""

from __future__ import annotations

import sqlite3

from flask import Response, flash, redirect, url_for

from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import require_card_access, require_holder_access
from server.registry import cards
from server.registry.people import holder_json
from server.web.blueprint import web_blueprint
from server.web.forms import explain, refuse_explained
from server.web.guard import page
from server.web.people import render_person
from server.web.person_forms import ActionForm, IssueCardForm, ReplaceCardForm, card_choices
from shared.errors import DomainError

bp = web_blueprint("web_cards", __name__)


def _back(holder_id: str) -> Response:
    return redirect(url_for("web_people.person", holder_id=holder_id) + "#cards-h")  # type: ignore[return-value]


def _card_of(conn: sqlite3.Connection, holder_id: str, card_id: str) -> None:
    """The card, in the caller's scope and belonging to this person (else the 404 page)."""
    require_holder_access(conn, holder_id)
    if require_card_access(conn, card_id)["holder_id"] != holder_id:
        raise DomainError("card_unknown", f"{card_id} is not {holder_id}'s")


@bp.post("/people/<holder_id>/cards/<card_id>/lost")
@page("admin", "clerk")
def report_lost(holder_id: str, card_id: str) -> Response:
    conn = get_db()
    _card_of(conn, holder_id, card_id)
    if ActionForm().validate_on_submit():
        with write_txn(conn):
            cards.report_lost(conn, card_id, get_clock().now_ms())
        flash(f"卡片 {card_id} 已挂失：各终端随即拒绝此卡。余额仍在本人名下，补卡后可继续使用。", "success")
    return _back(holder_id)


@bp.post("/people/<holder_id>/cards/<card_id>/found")
@page("admin", "clerk")
def report_found(holder_id: str, card_id: str) -> Response:
    conn = get_db()
    _card_of(conn, holder_id, card_id)
    if ActionForm().validate_on_submit():
        try:
            with write_txn(conn):
                cards.report_found(conn, card_id, get_clock().now_ms())
        except DomainError as exc:
            flash(f"未解除挂失：{explain(exc)}", "error")
        else:
            flash(f"卡片 {card_id} 已解除挂失，可以继续使用。", "success")
    return _back(holder_id)


@bp.post("/people/<holder_id>/replace")
@page("admin", "clerk")
def replace(holder_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_holder_access(conn, holder_id)
    form = ReplaceCardForm()
    card_choices(form, holder_json(conn, row))
    if form.validate_on_submit():
        old = form.old_card.data or ""
        if old not in {c for c, _ in form.old_card.choices}:  # type: ignore[union-attr]
            form.old_card.errors = ["请选择要替换的卡"]
        else:
            new = form.new_card_id.data.strip()
            try:
                with write_txn(conn):
                    cards.replace(conn, old, new, get_clock().now_ms())
            except DomainError as exc:
                refuse_explained(form, exc, "new_card_id")
            else:
                flash(f"已补发新卡 {new}：原卡 {old} 停用，余额不变。", "success")
                return _back(holder_id)
    return render_person(conn, row, replace=form)


@bp.post("/people/<holder_id>/cards")
@page("admin", "clerk")
def issue(holder_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_holder_access(conn, holder_id)
    form = IssueCardForm()
    if form.validate_on_submit():
        card_id = form.issue_card_id.data.strip()
        try:
            with write_txn(conn):
                cards.issue(conn, holder_id, card_id, get_clock().now_ms())
        except DomainError as exc:
            refuse_explained(form, exc, "issue_card_id")
        else:
            flash(f"已发卡 {card_id}。", "success")
            return _back(holder_id)
    return render_person(conn, row, issue=form)
