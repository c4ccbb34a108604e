"""Imports in the console: upload a file, see what it would do, confirm exactly that.

Every import page (the attachment table of canteens, a unit's staff roster) runs the same
three steps over the service the API and the CLI use — the importer itself decides, this
module only carries the file between the steps:

1. **Upload** a CSV file (UTF-8 or GBK, up to :data:`~server.infra.csvinput.MAX_UPLOAD_BYTES`).
2. **Preview** (:func:`preview`): the service runs with ``dry_run`` inside a transaction that
   is always rolled back, so a preview cannot write. A file with any bad line is refused
   whole: the page lists every error by line and column and keeps nothing. A good file is
   kept in ``web_uploads`` by the SHA-256 of its bytes, with the digest of the report shown.
3. **Confirm** (:func:`confirm`): the kept file (named by its hash in the form, so a file
   uploaded since cannot be applied by an older page) is imported for real in one write
   transaction, and its report must equal the previewed one; if the data changed since the
   preview (another import, a card issued), nothing is applied (``import_changed``) and the
   new preview is shown to confirm instead.

One upload per account and kind is kept: a new upload replaces it, a confirm removes it, and
any left over is gone after a day.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Response, flash, redirect, url_for
from flask_wtf.file import FileField, FileRequired
from werkzeug.datastructures import FileStorage
from wtforms import HiddenField
from wtforms.validators import DataRequired, Regexp

from server.infra.csvinput import MAX_UPLOAD_BYTES, decode
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.web.forms import Form, add_error
from server.web.guard import current_account
from shared.clock import DAY_MS
from shared.errors import DomainError, message

KEEP_MS = DAY_MS
# what a preview page lists at most (the counts above it are complete; never 20,000 rows)
PREVIEW_ROWS = 200
# the importer a page runs: (conn, the file as text, now, dry_run, the page's options) → report
Run = Callable[[sqlite3.Connection, str, int, bool, dict[str, Any]], dict[str, Any]]
# how a page shows a refusal beside a field (forms.refuse or forms.refuse_explained)
Refusal = Callable[[Form, DomainError, str], None]


@dataclass(frozen=True)
class Importer:
    kind: str  # the web_uploads kind: 'roster', 'canteens'
    run: Run


@dataclass
class Outcome:
    """What a step produced for the page: a preview (``report`` and the ``digest`` to confirm),
    the refused lines (``errors``), or an applied ``report``; ``changed``: a confirm found the
    data changed since the preview (the report is the new preview)."""

    report: dict[str, Any] | None = None
    digest: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    applied: bool = False
    changed: bool = False


class UploadForm(Form):
    file = FileField(
        "CSV 文件",
        description="Excel 另存为“CSV UTF-8（逗号分隔）”或“CSV（逗号分隔）”均可，最大 5 MB",
        validators=[FileRequired("请选择要上传的文件")],
    )


class ConfirmForm(Form):
    digest = HiddenField(
        validators=[DataRequired("缺少文件编号"), Regexp(r"^[0-9a-f]{64}$", message="文件编号有误")]
    )


def read_upload(form: UploadForm) -> tuple[bytes, str] | None:
    """The uploaded file's bytes and text; None with the reason beside the file field."""
    upload: FileStorage = form.file.data
    data = upload.read(MAX_UPLOAD_BYTES + 1)
    if not data:
        add_error(form, "file", "文件是空的")
        return None
    if len(data) > MAX_UPLOAD_BYTES:
        add_error(form, "file", f"文件过大：最大 {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        return None
    try:
        return data, decode(data)
    except DomainError:
        add_error(form, "file", "无法读取该文件：请在 Excel 中另存为“CSV UTF-8（逗号分隔）”后重新上传")
        return None


def line_errors(exc: DomainError) -> list[dict[str, Any]]:
    """An ``import_rejected`` refusal's lines as people read them: line, column, and the
    reason in Chinese (the code's text and the Chinese detail, else the detail as given)."""
    out = []
    for e in exc.context.get("errors") or []:
        detail = e.get("detail_zh") or e.get("detail") or ""
        out.append(
            {
                "line": e.get("line"),
                "column": e.get("column") or "",
                "code": e.get("code"),
                "text": message(str(e.get("code"))) + (f"：{detail}" if detail else ""),
            }
        )
    return sorted(out, key=lambda e: (e["line"] or 0, e["column"]))


def report_digest(report: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(report, sort_keys=True, ensure_ascii=False, default=str).encode()
    ).hexdigest()


@contextlib.contextmanager
def rolled_back(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A transaction that is always rolled back: whatever runs inside cannot write."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT preview")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK TO preview")
            conn.execute("RELEASE preview")
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")


def _dry_run(importer: Importer, conn: sqlite3.Connection, text: str, now_ms: int, options: dict) -> Outcome:
    try:
        with rolled_back(conn):
            return Outcome(report=importer.run(conn, text, now_ms, True, options))
    except DomainError as exc:
        if exc.code != "import_rejected":
            raise
        return Outcome(errors=line_errors(exc))


def _keep(
    conn: sqlite3.Connection,
    account_id: int,
    kind: str,
    digest: str,
    text: str,
    options: dict[str, Any],
    report: dict[str, Any],
    now_ms: int,
) -> None:
    with write_txn(conn):
        conn.execute("DELETE FROM web_uploads WHERE created_at_ms < ?", (now_ms - KEEP_MS,))
        conn.execute(
            "INSERT INTO web_uploads(account_id, kind, digest, text, options_json, preview, created_at_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(account_id, kind) DO UPDATE SET "
            "digest = excluded.digest, text = excluded.text, options_json = excluded.options_json, "
            "preview = excluded.preview, created_at_ms = excluded.created_at_ms",
            (account_id, kind, digest, text, json.dumps(options), report_digest(report), now_ms),
        )


def _forget(conn: sqlite3.Connection, account_id: int, kind: str) -> None:
    conn.execute("DELETE FROM web_uploads WHERE account_id = ? AND kind = ?", (account_id, kind))


def preview(
    importer: Importer,
    conn: sqlite3.Connection,
    account_id: int,
    data: bytes,
    text: str,
    now_ms: int,
    options: dict[str, Any] | None = None,
) -> Outcome:
    """What the file would do (nothing is written but the kept file), or its refused lines.
    A refusal that is not about lines (the file is not a CSV at all) is raised."""
    options = options or {}
    outcome = _dry_run(importer, conn, text, now_ms, options)
    if outcome.report is not None:
        outcome.digest = hashlib.sha256(data).hexdigest()
        _keep(conn, account_id, importer.kind, outcome.digest, text, options, outcome.report, now_ms)
    return outcome


def confirm(
    importer: Importer, conn: sqlite3.Connection, account_id: int, digest: str, now_ms: int
) -> Outcome:
    """Import the kept file named ``digest`` exactly as previewed, or nothing (see module doc).
    The kept file is read and removed in the import's own transaction: two confirms of one
    file (a double click, a reload) import it once, the second finds it gone."""
    kept: sqlite3.Row | None = None
    try:
        with write_txn(conn):
            kept = conn.execute(
                "SELECT text, options_json, preview FROM web_uploads "
                "WHERE account_id = ? AND kind = ? AND digest = ? AND created_at_ms >= ?",
                (account_id, importer.kind, digest, now_ms - KEEP_MS),
            ).fetchone()
            if kept is None:
                raise DomainError("upload_expired", f"no kept {importer.kind} upload {digest[:12]}")
            report = importer.run(conn, kept["text"], now_ms, False, json.loads(kept["options_json"]))
            if report_digest(report) != kept["preview"]:
                raise DomainError("import_changed", f"{importer.kind} report differs from its preview")
            _forget(conn, account_id, importer.kind)
    except DomainError as exc:
        if kept is None or exc.code not in ("import_changed", "import_rejected"):
            raise
        # the data changed since the preview: nothing was applied; show what the file would
        # do now, and keep the file with that preview for the next confirm
        options = json.loads(kept["options_json"])
        outcome = _dry_run(importer, conn, kept["text"], now_ms, options)
        outcome.changed = True
        if outcome.report is not None:
            outcome.digest = digest
            _keep(conn, account_id, importer.kind, digest, kept["text"], options, outcome.report, now_ms)
        else:
            with write_txn(conn):
                _forget(conn, account_id, importer.kind)
        return outcome
    return Outcome(report=report, applied=True)


# --- the two steps as a page runs them ----------------------------------------------------


def preview_posted(
    importer: Importer, form: UploadForm, refusal: Refusal, options: dict[str, Any] | None = None
) -> Outcome | None:
    """The upload step: the posted file previewed, or None (nothing posted, or the reason is
    on ``form``)."""
    if not form.validate_on_submit():
        return None
    read = read_upload(form)
    account = current_account()
    if read is None or account is None:
        return None
    try:
        return preview(importer, get_db(), account.id, *read, get_clock().now_ms(), options)
    except DomainError as exc:
        refusal(form, exc, "file")
        return None


def confirm_posted(
    importer: Importer,
    upload_form: UploadForm,
    show: Callable[[UploadForm, Outcome | None], tuple[str, int]],
    refusal: Refusal,
    applied: Callable[[dict[str, Any]], str],
    then: str,
) -> Response | tuple[str, int]:
    """The confirm step: import the file the posted digest names; when applied, flash
    ``applied(report)`` and go to the endpoint ``then``; otherwise ``show`` the upload page
    again with why (no file to confirm, a refusal, or the data changed: the new preview)."""
    form = ConfirmForm()
    account = current_account()
    if not form.validate_on_submit() or account is None:
        upload_form.form_errors.append("没有可确认的文件，请先上传并预览。")
        return show(upload_form, None)
    try:
        outcome = confirm(importer, get_db(), account.id, form.digest.data, get_clock().now_ms())
    except DomainError as exc:
        refusal(upload_form, exc, "file")
        return show(upload_form, None)
    if outcome.applied and outcome.report is not None:
        flash(applied(outcome.report), "success")
        return redirect(url_for(then))  # type: ignore[return-value]
    upload_form.form_errors.append(
        "预览之后数据已有变化，未导入任何数据。请核对下面新的预览，确认无误后再导入。"
        if outcome.report is not None
        else "预览之后数据已有变化，文件现在有错误，未导入任何数据。请改正后重新上传。"
    )
    return show(upload_form, outcome)
