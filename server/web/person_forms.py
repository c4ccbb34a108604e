"""The forms on a person's page (admin; a clerk for their own unit): replace or issue a card,
register the person's own bank account, ask for a leaver's refund — and what the page shows
beside them (which cards can be replaced, the person's refund requests).

The views that take these forms are in :mod:`server.web.cards` and :mod:`server.web.leavers`;
a refused form comes back on the person's page (:func:`server.web.people.render_person`) with
the reason beside its field.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from server.registry import leavers
from server.web.forms import Form

REQUIRED = "请填写此项"
# the forms a person's page carries, by the name the template uses
FORM_NAMES = ("replace", "issue", "bank", "refund")


class ReplaceCardForm(Form):
    old_card = SelectField("要替换的卡", validate_choice=False)
    new_card_id = StringField(
        "新卡号",
        description="新卡上印的卡号或读卡器读出的卡号；原卡随即停用，余额不变",
        validators=[DataRequired(REQUIRED), Length(max=64, message="卡号过长")],
    )


class IssueCardForm(Form):
    issue_card_id = StringField(
        "卡号", validators=[DataRequired(REQUIRED), Length(max=64, message="卡号过长")]
    )


class BankAccountForm(Form):
    bank_account = StringField(
        "本人银行卡号",
        description="本人的建行储蓄卡，10–30 位数字；离职退款只能退到这里。每次更改都会记录",
        validators=[DataRequired(REQUIRED), Length(max=40, message="卡号过长")],
    )


class RefundRequestForm(Form):
    refund_bank_account = StringField(
        "退款银行卡号",
        description="须为本人已登记的银行卡；尚未登记的，在此填写即登记",
        validators=[Length(max=40, message="卡号过长")],
    )


class ActionForm(Form):
    """A button that changes something (挂失, 解除挂失): only the CSRF token."""


class LeaveForm(Form):
    confirm = BooleanField("我已核对：该人员已离职或调出本单位", validators=[DataRequired("请勾选确认")])


class RejectForm(Form):
    reason = TextAreaField(
        "不予退款的原因", validators=[DataRequired(REQUIRED), Length(max=200, message="原因不超过 200 字")]
    )


def replaceable(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cards a replacement may be issued for: the active one, or a lost one not yet replaced."""
    return [c for c in cards if c["status"] == "active" or (c["status"] == "lost" and not c["replaced_by"])]


def default_forms(holder: dict[str, Any]) -> dict[str, Form]:
    """The person page's forms, empty (``formdata=None``: not read from this request)."""
    return {
        "replace": ReplaceCardForm(formdata=None),
        "issue": IssueCardForm(formdata=None),
        "bank": BankAccountForm(formdata=None),
        "refund": RefundRequestForm(formdata=None),
    }


def card_choices(form: ReplaceCardForm, holder: dict[str, Any]) -> None:
    form.old_card.choices = [
        (c["card_id"], f"{c['card_id']}（{'已挂失' if c['status'] == 'lost' else '正常'}）")
        for c in replaceable(holder["cards"])
    ]


def refund_requests(conn: sqlite3.Connection, holder_id: str, now_ms: int) -> list[dict[str, Any]]:
    ids = [
        r[0]
        for r in conn.execute("SELECT id FROM refund_requests WHERE holder_id = ? ORDER BY id", (holder_id,))
    ]
    return [leavers.get_request(conn, i, now_ms) for i in ids]
