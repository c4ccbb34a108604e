"""Forms: Flask-WTF forms in Chinese, and refusals shown beside the field they concern.

The pattern every console form follows::

    form = SomeForm()
    if form.validate_on_submit():           # the field rules (WTForms validators, in Chinese)
        try:
            with write_txn(conn):            # the domain's own checks run inside; a refusal
                do_the_thing(conn, ...)      # rolls the transaction back: nothing changes
        except DomainError as exc:
            refuse(form, exc, "amount")      # its Chinese text beside the field
        else:
            flash("已保存", "success")
            return redirect(...)
    return render_template(..., form=form), status_of(form)

Templates render fields with ``{{ field(form.amount) }}`` (``web/macros.html``): the label, the
input tied to it (``aria-describedby``) and the reasons it was refused.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import Field
from wtforms.validators import Length, Optional, Regexp

from shared.errors import DomainError, message


class Form(FlaskForm):
    """Base of the console's forms: WTForms' own messages in Chinese (its bundled ``zh``
    catalogue; Flask-WTF's Babel hook is off, ``WTF_I18N_ENABLED = False``)."""

    class Meta:
        locales = ("zh",)


def new_id_rules(too_long: str) -> list[Any]:
    """The field rules of an id typed for a new unit or terminal (blank: numbered
    automatically): the registry's own, at most 32 letters, digits, - and _."""
    return [
        Optional(),
        Length(max=32, message=too_long),
        Regexp(r"^[A-Za-z0-9_\-]+$", message="只能用字母、数字、- 和 _"),
    ]


def refusal_text(exc: DomainError) -> str:
    """A refusal as a person reads it: the code's Chinese text and the Chinese detail."""
    zh = exc.context.get("zh")
    return message(exc.code) + (f"：{zh}" if zh else "")


def add_error(form: FlaskForm, field_name: str | None, text: str) -> None:
    field: Field | None = form._fields.get(field_name) if field_name else None  # noqa: SLF001
    if field is not None:
        field.errors = [*field.errors, text]
    else:
        form.form_errors.append(text)


def refuse(form: FlaskForm, exc: DomainError, field_name: str | None = None) -> None:
    """Show a refusal beside ``field_name`` (or the field the error names, else above the form)."""
    name = field_name or exc.context.get("field")
    add_error(form, name if isinstance(name, str) else None, refusal_text(exc))


def status_of(form: FlaskForm) -> int:
    """200 for a form shown fresh, 400 for one sent back with reasons."""
    return 400 if form.errors else 200


def explain(exc: DomainError) -> str:
    """:func:`refusal_text`, with the English detail beside it when the refusal has no Chinese
    detail of its own (many registry checks say *which* rule only in English)."""
    text = refusal_text(exc)
    return text + (f"（{exc.detail}）" if not exc.context.get("zh") and exc.detail else "")


def refuse_explained(form: FlaskForm, exc: DomainError, field_name: str | None = None) -> None:
    """:func:`refuse` with :func:`explain`'s text."""
    name = field_name or exc.context.get("field")
    add_error(form, name if isinstance(name, str) else None, explain(exc))
