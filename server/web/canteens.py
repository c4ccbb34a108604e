"""Canteens (admin; the auditor reads): the list, the attachment table (附件 信息统计表)
imported by upload with a preview and a confirm, and a canteen's page — details, meal
periods and prices (with visitor prices), quality bands, shop items with their reference
prices.

Everything goes through the registry's own functions, the ones ``/api/v1/canteens`` and
``canteen-server canteen-import`` call: :func:`server.registry.canteens.import_table`
(reading the table is :mod:`server.registry.seed_table`), ``update`` and ``set_item`` (whose
rules — meal times, prices above ¥0.00, a shop price not above its reference price — are
:mod:`server.registry.canteen_config`), and :func:`server.closing.quality.set_bands`. A change
of rules or prices reaches the terminals as a delta in the same commit. A refused form changes
nothing and shows its reason beside the field.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from flask import Response, flash, redirect, render_template, request, url_for
from wtforms import BooleanField, IntegerField, StringField, TextAreaField
from wtforms.fields import DecimalField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from server.closing import quality
from server.infra.db import write_txn
from server.infra.db_flask import get_clock, get_db
from server.infra.scope import require_canteen_access
from server.registry import canteens as registry
from server.registry.canteen_config import MEAL_NAMES_ZH, MEAL_PERIODS, minutes, validate_meal
from server.web import imports
from server.web.blueprint import web_blueprint
from server.web.downloads import table_download
from server.web.fmt import yuan
from server.web.forms import Form, add_error, refuse_explained
from server.web.guard import page
from server.web.tables import Column, Table, TableQuery, fetch, fetch_all, like
from server.web.yuan_field import YuanField
from shared.errors import DomainError

bp = web_blueprint("web_canteens", __name__)

REQUIRED = "请填写此项"
CANTEENS = Table(
    name="canteens",
    columns=(
        Column("id", "编号", "c.id", link=("web_canteens.canteen", "canteen_id", "id")),
        Column("name", "食堂名称", "c.name", link=("web_canteens.canteen", "canteen_id", "id")),
        Column("unit_name", "所属单位", "u.name"),
        Column("operator", "经营单位", "c.operator"),
        Column("mode", "经营方式", "c.self_operated"),
        Column("location", "地点", "c.location"),
        Column("seats", "容量", "c.seats", "int"),
    ),
    select_sql=(
        "SELECT c.id AS id, c.name AS name, u.name AS unit_name, c.operator AS operator, "
        "CASE WHEN c.self_operated = 1 THEN '自营' ELSE '外包' END AS mode, c.location AS location, "
        "c.seats AS seats FROM canteens c JOIN units u ON u.id = c.unit_id"
    ),
    default_sort="id",
    tie_break="c.id",
    search_sql="(c.name LIKE ? ESCAPE '\\' OR u.name LIKE ? ESCAPE '\\' OR c.operator LIKE ? ESCAPE '\\')",
    search_args=lambda q: [like(q)] * 3,
    search_label="食堂、单位或经营单位",
)


# --- the list and the attachment table ---------------------------------------------------


@bp.get("/canteens")
@page("admin", "auditor")
def canteens() -> str | Response:
    conn = get_db()
    query = TableQuery.from_args(CANTEENS, request.args)
    if request.args.get("format"):
        return table_download(CANTEENS, fetch_all(conn, CANTEENS, query), "食堂")
    return render_template("registry/canteens.html", table=fetch(conn, CANTEENS, query))


class CanteenUploadForm(imports.UploadForm):
    create_units = BooleanField(
        "同时登记文件中尚未登记的单位",
        description="新登记的单位经费标准为 ¥0.00，导入后请在单位页面设置",
    )


def _run_import(
    conn: sqlite3.Connection, text: str, now_ms: int, dry_run: bool, options: dict[str, Any]
) -> dict[str, Any]:
    return registry.import_table(
        conn, text, now_ms, create_units=bool(options.get("create_units")), dry_run=dry_run
    )


TABLE_IMPORT = imports.Importer("canteens", _run_import)
FIELD_ZH = {
    "name": "食堂名称",
    "location": "地点",
    "contact": "联系人",
    "phone": "联系电话",
    "service_staff": "服务员人数",
    "seats": "食堂容量",
    "diners": "用餐人数",
    "dining_area_m2": "就餐面积（平方米）",
    "notes": "备注",
    "operator": "经营单位",
    "self_operated": "经营方式",
}
MEAL_FIELD_ZH = {"price_fen": "价格", "start": "开始时间", "end": "结束时间", "visitor_price_fen": "访客价"}


def _shown(field: str, value: Any) -> str:  # noqa: ANN401  # a stored value of any field
    if value is None or value == "":
        return "—"
    if field.endswith("_fen"):
        return yuan(int(value))
    if field == "self_operated":
        return "自营" if value else "外包"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def change_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The import report per canteen as people read it: what happens to it, and each field
    from → to (prices in yuan, meal fields named in Chinese)."""
    out = []
    for c in report.get("changes", []):
        changes = []
        for ch in c["changes"]:
            field = ch["field"]
            if "." in field:
                period, key = field.split(".", 1)
                label = MEAL_NAMES_ZH.get(period, period) + MEAL_FIELD_ZH.get(key, key)
            else:
                label = FIELD_ZH.get(field, field)
            before, after = _shown(field, ch["from"]), _shown(field, ch["to"])
            if before != after:  # a blank cell over nothing stored changes nothing people see
                changes.append({"label": label, "from": before, "to": after})
        action = "新增" if c["canteen_id"] is None else ("变更" if changes else "无变化")
        out.append({"canteen": c["canteen"], "unit": c["unit"], "action": action, "changes": changes})
    return out


def _import_page(form: imports.UploadForm, outcome: imports.Outcome | None) -> tuple[str, int]:
    html = render_template(
        "registry/canteen_import.html",
        form=form,
        outcome=outcome,
        rows=change_rows(outcome.report) if outcome and outcome.report else [],
        confirm=imports.ConfirmForm(digest=outcome.digest) if outcome and outcome.digest else None,
    )
    refused = bool(form.errors or (outcome and outcome.errors))
    return html, 400 if refused else 200


@bp.route("/canteens/import", methods=["GET", "POST"])
@page("admin")
def import_upload() -> tuple[str, int]:
    form = CanteenUploadForm()
    options = {"create_units": bool(form.create_units.data)}
    return _import_page(form, imports.preview_posted(TABLE_IMPORT, form, refuse_explained, options))


def import_summary(report: dict[str, Any]) -> str:
    parts = [f"新增食堂 {len(report['created'])} 个", f"变更 {len(report['updated'])} 个"]
    if report.get("units_created"):
        parts.append(f"新登记单位 {len(report['units_created'])} 个")
    return "，".join(parts)


@bp.post("/canteens/import/confirm")
@page("admin")
def import_confirm() -> Response | tuple[str, int]:
    return imports.confirm_posted(
        TABLE_IMPORT,
        CanteenUploadForm(formdata=None),
        _import_page,
        refuse_explained,
        lambda report: f"附件表已导入：{import_summary(report)}；各终端随即收到新的规则和价格。",
        "web_canteens.canteens",
    )


# --- a canteen's page and its forms ------------------------------------------------------


class DetailsForm(Form):
    name = StringField("食堂名称", validators=[DataRequired(REQUIRED), Length(max=64, message="名称过长")])
    operator = StringField(
        "经营单位", description="外包食堂的运营公司；运营方账号和结算按此名称", validators=[Length(max=64)]
    )
    self_operated = BooleanField("自营（本单位自办，不收系统服务费）")
    location = StringField("地点", validators=[Length(max=128)])
    contact = StringField("联系人", validators=[Length(max=32)])
    phone = StringField("联系电话", validators=[Length(max=32)])
    service_staff = IntegerField(
        "服务员人数", validators=[Optional(), NumberRange(min=0, message="须为 0 或正整数")]
    )
    seats = IntegerField(
        "食堂容量（人）", validators=[Optional(), NumberRange(min=0, message="须为 0 或正整数")]
    )
    diners = IntegerField("用餐人数", validators=[Optional(), NumberRange(min=0, message="须为 0 或正整数")])
    dining_area_m2 = DecimalField(
        "就餐面积（平方米）",
        places=None,
        validators=[Optional(), NumberRange(min=0, message="须为 0 或正数")],
    )
    notes = TextAreaField("备注", validators=[Length(max=500)])


def _check_time(form: Form, field: Any) -> None:  # noqa: ANN401  # a WTForms field
    if field.data:
        try:
            minutes(field.data.strip().replace("：", ":"))
        except DomainError:
            raise ValidationError("时间格式应为 时:分，如 11:30") from None


class MealsForm(Form):
    """One fieldset per meal period: served or not, times, price and visitor price."""


for _p in MEAL_PERIODS:
    _zh = MEAL_NAMES_ZH[_p]
    setattr(MealsForm, f"{_p}_served", BooleanField(f"供应{_zh}"))
    setattr(MealsForm, f"{_p}_start", StringField(f"{_zh}开始时间", validators=[_check_time]))
    setattr(MealsForm, f"{_p}_end", StringField(f"{_zh}结束时间", validators=[_check_time]))
    setattr(MealsForm, f"{_p}_price", YuanField(f"{_zh}价格（元）"))
    setattr(
        MealsForm,
        f"{_p}_visitor",
        YuanField(f"{_zh}访客价（元）", description="外单位人员的价格；不填则与本单位同价"),
    )


class ItemForm(Form):
    item_sku = StringField(
        "商品编号",
        description="字母、数字、_、-、.；编号已有的商品即修改",
        validators=[DataRequired(REQUIRED), Length(max=64, message="编号过长")],
    )
    item_name = StringField(
        "商品名称", validators=[DataRequired(REQUIRED), Length(max=64, message="名称过长")]
    )
    item_price = YuanField("售价（元）", validators=[InputRequired(REQUIRED)])
    item_reference = YuanField(
        "市场参考价（元）",
        description="市内大型商场同类商品价格；售价不得高于此价",
        validators=[InputRequired(REQUIRED)],
    )
    item_barcodes = StringField(
        "条码",
        description="可不填；多个条码用空格或逗号分开（EAN-13、EAN-8、UPC-A）",
        validators=[Length(max=600)],
    )


class BandsForm(Form):
    bands = TextAreaField(
        "质量分档",
        description="每行一档：最低分 支付比例(%)，如“90 100”；须有一档从 0 分开始，分数越低支付比例不能越高",
        validators=[DataRequired(REQUIRED), Length(max=400)],
    )


class ActionForm(Form):
    """A button (删除商品): only the CSRF token."""


ITEM_FIELDS = {
    "price_above_reference": "item_price",
    "barcode_invalid": "item_barcodes",
    "barcode_taken": "item_barcodes",
}
_BAND_SPLIT = re.compile(r"[\s,，:：%→>=≥]+")


def bands_text(bands: Any) -> str:  # noqa: ANN401  # (min_score, pay_pct) pairs
    return "\n".join(f"{lo} {pct}" for lo, pct in bands)


def parse_bands(text: str) -> list[list[int]]:
    """``90 100`` per line → [[90, 100], …]; a line that is not two whole numbers is refused
    with its number (the bands' own rules are :func:`~server.books.settlement_rules.validate_bands`)."""
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        parts = [p for p in _BAND_SPLIT.split(line.strip()) if p]
        if not parts:
            continue
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"第 {i} 行应为“最低分 支付比例”两个整数，如 90 100")
        out.append([int(parts[0]), int(parts[1])])
    return out


def _defaults(row: sqlite3.Row, conn: sqlite3.Connection, edit_sku: str | None) -> dict[str, Form]:
    config = json.loads(row["config_json"])
    meals = config.get("meals") or {}
    meal_data: dict[str, Any] = {}
    for p in MEAL_PERIODS:
        m = meals.get(p)
        meal_data |= {
            f"{p}_served": bool(m),
            f"{p}_start": m["start"] if m else "",
            f"{p}_end": m["end"] if m else "",
            f"{p}_price": m["price_fen"] if m else None,
            f"{p}_visitor": m.get("visitor_price_fen") if m else None,
        }
    item = (config.get("items") or {}).get(edit_sku or "")
    item_data = (
        {
            "item_sku": edit_sku,
            "item_name": item["name"],
            "item_price": item["price_fen"],
            "item_reference": item["reference_price_fen"],
            "item_barcodes": " ".join(item.get("barcodes", [])),
        }
        if item
        else {}
    )
    return {
        "details": DetailsForm(
            formdata=None,
            **{k: row[k] for k in ("name", "operator", "location", "contact", "phone", "notes")},
            self_operated=bool(row["self_operated"]),
            **{k: row[k] for k in ("service_staff", "seats", "diners", "dining_area_m2")},
        ),
        "meals": MealsForm(formdata=None, **meal_data),
        "item": ItemForm(formdata=None, **item_data),
        "bands": BandsForm(formdata=None, bands=bands_text(quality.bands_of(conn, row["id"]))),
    }


def render_canteen(conn: sqlite3.Connection, row: sqlite3.Row, **forms: Form) -> tuple[str, int]:
    """The canteen's page; ``forms``: one sent back with its reasons (400), the others as stored."""
    config = json.loads(row["config_json"])
    unit = conn.execute("SELECT id, name FROM units WHERE id = ?", (row["unit_id"],)).fetchone()
    terminals = conn.execute(
        "SELECT id, state FROM terminals WHERE canteen_id = ? ORDER BY id", (row["id"],)
    ).fetchall()
    edit_sku = request.args.get("edit")
    items = config.get("items") or {}
    html = render_template(
        "registry/canteen.html",
        c=registry.to_json(row),
        unit=unit,
        meals=[(p, MEAL_NAMES_ZH[p], (config.get("meals") or {}).get(p)) for p in MEAL_PERIODS],
        shop_items=sorted(items.items()),
        bands=quality.bands_of(conn, row["id"]),
        terminals=terminals,
        forms={**_defaults(row, conn, edit_sku), **forms},
        editing=edit_sku if edit_sku in items else None,
        periods=[(p, MEAL_NAMES_ZH[p]) for p in MEAL_PERIODS],
    )
    return html, 400 if any(f.errors for f in forms.values()) else 200


@bp.get("/canteens/<canteen_id>")
@page("admin", "auditor")
def canteen(canteen_id: str) -> tuple[str, int]:
    conn = get_db()
    return render_canteen(conn, require_canteen_access(conn, canteen_id))


def _saved(canteen_id: str, text: str, anchor: str) -> Response:
    flash(text, "success")
    return redirect(url_for("web_canteens.canteen", canteen_id=canteen_id) + anchor)  # type: ignore[return-value]


@bp.post("/canteens/<canteen_id>/details")
@page("admin")
def details(canteen_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_canteen_access(conn, canteen_id)
    form = DetailsForm()
    if form.validate_on_submit():
        area = form.dining_area_m2.data
        try:
            with write_txn(conn):
                registry.update(
                    conn,
                    canteen_id,
                    get_clock().now_ms(),
                    name=form.name.data,
                    operator=form.operator.data or "",
                    self_operated=bool(form.self_operated.data),
                    location=form.location.data or "",
                    contact=form.contact.data or "",
                    phone=form.phone.data or "",
                    notes=form.notes.data or "",
                    service_staff=form.service_staff.data,
                    seats=form.seats.data,
                    diners=form.diners.data,
                    dining_area_m2=None if area is None else float(area),
                )
        except DomainError as exc:
            refuse_explained(form, exc, "name" if exc.code == "already_exists" else None)
        else:
            return _saved(canteen_id, "食堂信息已保存。", "#details-h")
    return render_canteen(conn, row, details=form)


def _meals_change(form: MealsForm) -> dict[str, Any] | None:
    """The meals the form describes ({period: meal or None}), or None with reasons beside
    the fields (each served period checked by the domain's own ``validate_meal``)."""
    meals: dict[str, Any] = {}
    for p in MEAL_PERIODS:
        if not form[f"{p}_served"].data:
            meals[p] = None
            continue
        for key in ("start", "end", "price"):
            f = form[f"{p}_{key}"]
            if f.data in (None, "") and not f.errors:
                f.errors = [*f.errors, REQUIRED]
        if any(form[f"{p}_{k}"].errors for k in ("start", "end", "price", "visitor")):
            continue
        meal = {
            "start": form[f"{p}_start"].data.strip().replace("：", ":"),
            "end": form[f"{p}_end"].data.strip().replace("：", ":"),
            "price_fen": form[f"{p}_price"].data,
            "visitor_price_fen": form[f"{p}_visitor"].data,
        }
        try:
            meals[p] = validate_meal(p, meal)
        except DomainError as exc:
            # the domain says which value in its (English) detail: a price, else the times
            where = "visitor" if "visitor" in exc.detail else "price" if "price" in exc.detail else "end"
            refuse_explained(form, exc, f"{p}_{where}")
    return None if form.errors else meals


@bp.post("/canteens/<canteen_id>/meals")
@page("admin")
def meals(canteen_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_canteen_access(conn, canteen_id)
    form = MealsForm()
    if form.validate_on_submit() and (change := _meals_change(form)) is not None:
        try:
            with write_txn(conn):
                registry.update(conn, canteen_id, get_clock().now_ms(), config={"meals": change})
        except DomainError as exc:
            refuse_explained(form, exc)
        else:
            return _saved(canteen_id, "供餐时间和价格已保存，各终端随即更新。", "#meals-h")
    return render_canteen(conn, row, meals=form)


@bp.post("/canteens/<canteen_id>/items")
@page("admin")
def item(canteen_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_canteen_access(conn, canteen_id)
    form = ItemForm()
    if form.validate_on_submit():
        sku = form.item_sku.data.strip()
        codes = [c for c in registry.BARCODE_SEPARATORS.split(form.item_barcodes.data or "") if c]
        try:
            with write_txn(conn):
                registry.set_item(
                    conn,
                    canteen_id,
                    sku,
                    form.item_name.data,
                    form.item_price.data,
                    form.item_reference.data,
                    get_clock().now_ms(),
                    barcodes=codes,
                )
        except DomainError as exc:
            refuse_explained(form, exc, ITEM_FIELDS.get(exc.code))
        else:
            return _saved(canteen_id, f"商品 {sku} 已保存，各终端随即更新价格。", "#items-h")
    return render_canteen(conn, row, item=form)


@bp.post("/canteens/<canteen_id>/items/<sku>/remove")
@page("admin")
def remove_item(canteen_id: str, sku: str) -> Response:
    conn = get_db()
    require_canteen_access(conn, canteen_id)
    if ActionForm().validate_on_submit():
        with write_txn(conn):
            registry.remove_item(conn, canteen_id, sku, get_clock().now_ms())
        return _saved(canteen_id, f"商品 {sku} 已删除。", "#items-h")
    return redirect(url_for("web_canteens.canteen", canteen_id=canteen_id))  # type: ignore[return-value]


@bp.post("/canteens/<canteen_id>/bands")
@page("admin")
def bands(canteen_id: str) -> Response | tuple[str, int]:
    conn = get_db()
    row = require_canteen_access(conn, canteen_id)
    form = BandsForm()
    if form.validate_on_submit():
        try:
            raw = parse_bands(form.bands.data)
        except ValueError as exc:
            add_error(form, "bands", str(exc))
        else:
            try:
                with write_txn(conn):
                    quality.set_bands(conn, canteen_id, raw)
            except DomainError as exc:
                refuse_explained(form, exc, "bands")
            else:
                return _saved(canteen_id, "质量分档已保存，下次结算起按此支付。", "#bands-h")
    return render_canteen(conn, row, bands=form)
