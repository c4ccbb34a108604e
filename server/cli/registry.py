"""``canteen-server`` commands for the registry: units, canteens, shop items, the directory.

Amounts are typed in yuan (``300``, ``12.50``) and shown as ``¥12.50``. Imports are all or
nothing: a refused file prints every line's problem (or, with ``--json``, an object with
``errors``) and exits 2, like every other domain error.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from server.cli.output import AMOUNT_SETTINGS, JSON_OPTION, emit, print_import_errors, yuan
from server.infra.db import write_txn
from server.registry import canteens
from server.registry import units as registry
from server.registry.canteen_config import MEAL_NAMES_ZH, MEAL_PERIODS
from shared.clock import SystemClock
from shared.errors import DomainError
from shared.money import format_fen


def now_ms() -> int:
    return SystemClock().now_ms()


def run_import(
    obj: Any, as_json: bool, job: Callable[[Any], dict[str, Any]], describe: Callable[[dict[str, Any]], str]
) -> None:
    """Run an import in one write transaction; on a refused file print each line's problem."""
    conn = obj.db()
    try:
        with write_txn(conn):
            report = job(conn)
    except DomainError as exc:
        if exc.code != "import_rejected":
            raise
        print_import_errors(exc, as_json)
        raise
    emit({"ok": True, **report}, as_json, describe(report))


def read_file(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


@click.command("import-canteens")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--create-units",
    is_flag=True,
    help="Register units the file names that do not exist yet (standard ¥0.00).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change per canteen; write nothing.")
@JSON_OPTION
@click.pass_obj
def import_canteens(obj: Any, file: str, create_units: bool, dry_run: bool, as_json: bool) -> None:
    """Import the seed's attachment table (信息统计表, CSV) — all or nothing.

    One row per unit; 食堂数量 N > 1 on one row makes N canteens (list N places or values
    separated by 、), or give one row per canteen. Prices: 早餐/中餐/晚餐 columns, or one
    餐位标准 column like 5/12/10. Re-importing updates canteens by name and keeps what the
    file does not give (meal times, visitor prices set by hand); every change is listed per
    canteen, and --dry-run only lists them. Columns it does not use are named in a warning.
    """
    data = read_file(file)
    report: dict[str, Any] = {}

    def job(conn: Any) -> dict[str, Any]:
        report.update(canteens.import_table(conn, data, now_ms(), create_units=create_units, dry_run=dry_run))
        return report

    run_import(obj, as_json, job, lambda r: _canteen_import_text(r, dry_run))
    if report.get("unused_columns"):
        cols = "、".join(report["unused_columns"])
        click.echo(f"注意：以下列未导入 / warning: columns not imported: {cols}", err=True)


def _change_text(field: str, value: Any) -> str:
    if value is None:
        return "—"
    if field.endswith("price_fen"):
        return format_fen(value)
    return str(value)


_FIELD_ZH = {
    "location": "地点",
    "contact": "联系人",
    "phone": "电话",
    "service_staff": "服务员",
    "seats": "餐位",
    "diners": "用餐人数",
    "dining_area_m2": "面积",
    "notes": "备注",
    "operator": "经营单位",
    "self_operated": "自营",
    "price_fen": "价格",
    "visitor_price_fen": "访客价",
    "start": "开始",
    "end": "结束",
}


def _field_zh(field: str) -> str:
    period, _, key = field.partition(".")
    if key:
        return f"{MEAL_NAMES_ZH[period]}{_FIELD_ZH.get(key, key)}"
    return _FIELD_ZH.get(field, field)


def _canteen_import_text(r: dict[str, Any], dry_run: bool) -> list[str]:
    lines = [
        ("（试运行，未写入 dry run, nothing written）" if dry_run else "")
        + f"新建食堂 created: {len(r['created'])}  更新 updated: {len(r['updated'])}  "
        f"未变 unchanged: {len(r['unchanged'])}  新建单位 units created: {len(r['units_created'])}"
    ]
    for c in r["changes"]:
        if c["canteen_id"] is None:
            head = f"  新建 new {c['canteen']}（{c['unit']}）"
        elif c["changes"]:
            head = f"  更新 update {c['canteen_id']} {c['canteen']}"
        else:
            lines.append(f"  未变 unchanged {c['canteen_id']} {c['canteen']}")
            continue
        lines.append(head + ":")
        for ch in c["changes"]:
            was = "" if c["canteen_id"] is None else f"{_change_text(ch['field'], ch['from'])} → "
            lines.append(
                f"      {_field_zh(ch['field'])} {ch['field']}: {was}{_change_text(ch['field'], ch['to'])}"
            )
    return lines


@click.command("import-items")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Check the file and report; write nothing.")
@JSON_OPTION
@click.pass_obj
def import_items(obj: Any, file: str, dry_run: bool, as_json: bool) -> None:
    """Import shop items (食堂名称, 商品编号, 商品名称, 售价, 参考价, optional 条码) — all or nothing.
    A price above its big-store reference price refuses the file (第十条)."""
    data = read_file(file)
    run_import(
        obj,
        as_json,
        lambda conn: canteens.import_items(conn, data, now_ms(), dry_run=dry_run),
        lambda r: f"商品 items: {r['items']}  食堂 canteens: {', '.join(r['canteens'])}",
    )


# -- units ------------------------------------------------------------------------------------


@click.group()
def unit() -> None:
    """Units (单位) and their per-person quarterly meal-fund standard."""


@unit.command("add")
@click.argument("name")
@click.option(
    "--standard", default="0", show_default=True, help="Per person per quarter, yuan (e.g. 300 or 300.00)."
)
@click.option("--id", "unit_id", default=None, help="Unit id (default: next U####).")
@JSON_OPTION
@click.pass_obj
def unit_add(obj: Any, name: str, standard: str, unit_id: str | None, as_json: bool) -> None:
    """Register a unit."""
    fen = yuan(standard, zero_ok=True)
    conn = obj.db()
    with write_txn(conn):
        unit_id = unit_id or registry.next_id(conn, "units", "U")
        registry.add_unit(conn, unit_id, name, fen)
        data = registry.unit_json(conn, registry.get_unit(conn, unit_id))
    emit(data, as_json, f"{data['id']} {data['name']} 每人每季度 per person per quarter {format_fen(fen)}")


@unit.command("set")
@click.argument("unit_id")
@click.option("--name", default=None, help="New name.")
@click.option("--standard", default=None, help="New per-person quarterly standard, yuan.")
@JSON_OPTION
@click.pass_obj
def unit_set(obj: Any, unit_id: str, name: str | None, standard: str | None, as_json: bool) -> None:
    """Rename a unit or change its standard (applies to later allocations)."""
    conn = obj.db()
    with write_txn(conn):
        row = registry.update_unit(
            conn,
            unit_id,
            name=name,
            quarterly_standard_fen=None if standard is None else yuan(standard, zero_ok=True),
        )
        data = registry.unit_json(conn, row)
    emit(data, as_json, f"{data['id']} {data['name']} {format_fen(data['quarterly_standard_fen'])}")


@unit.command("list")
@JSON_OPTION
@click.pass_obj
def unit_list(obj: Any, as_json: bool) -> None:
    """All units with their standard, staff count and canteens."""
    conn = obj.db()
    data = [registry.unit_json(conn, r) for r in conn.execute("SELECT * FROM units ORDER BY id")]
    lines = [
        f"{u['id']}\t{u['name']}\t{format_fen(u['quarterly_standard_fen'])}\t人数 staff {u['active_holders']}"
        f"\t食堂 canteens {','.join(u['canteens']) or '-'}"
        for u in data
    ]
    emit(data, as_json, "\n".join(lines) or "(none)")


# -- canteens ---------------------------------------------------------------------------------

_MEAL_SPEC = re.compile(r"^\s*(\w+)\s+(\d{1,2}:\d{2})-(\d{1,2}:\d{2})\s+(\S+)(?:\s+(\S+))?\s*$")


def parse_meal(spec: str) -> tuple[str, dict[str, Any]]:
    """'lunch 11:30-13:30 12.00 15.00' → ('lunch', {start, end, price_fen, visitor_price_fen})."""
    m = _MEAL_SPEC.match(spec)
    if not m:
        raise DomainError(
            "invalid_input", f"--meal {spec!r}: write 'lunch 11:30-13:30 12.00 [visitor price]'"
        )
    return m.group(1), {
        "start": m.group(2),
        "end": m.group(3),
        "price_fen": yuan(m.group(4)),
        "visitor_price_fen": yuan(m.group(5)) if m.group(5) else None,
    }


@click.group()
def canteen() -> None:
    """Canteens: details, meal periods and prices, shop items."""


@canteen.command("list")
@JSON_OPTION
@click.pass_obj
def canteen_list(obj: Any, as_json: bool) -> None:
    """Every canteen with its unit, operator and meal prices."""
    rows = [canteens.to_json(r) for r in obj.db().execute("SELECT * FROM canteens ORDER BY id")]
    lines = [
        f"{c['id']}\t{c['name']}\t{c['unit_id']}\t"
        f"{'自营 self-operated' if c['self_operated'] else c['operator'] or '(no operator)'}\t"
        + " ".join(f"{MEAL_NAMES_ZH[p]}{format_fen(m['price_fen'])}" for p, m in c["config"]["meals"].items())
        for c in rows
    ]
    emit(rows, as_json, "\n".join(lines) or "(none)")


@canteen.command("show")
@click.argument("canteen_id")
@click.pass_obj
def canteen_show(obj: Any, canteen_id: str) -> None:
    """A canteen's details and rules (JSON)."""
    click.echo(json.dumps(canteens.to_json(canteens.get(obj.db(), canteen_id)), ensure_ascii=False, indent=2))


@canteen.command("set")
@click.argument("canteen_id")
@click.option("--name", default=None)
@click.option(
    "--operator", default=None, help="Operator company name (payouts and operator tokens key on it)."
)
@click.option(
    "--self-operated/--outsourced", "self_operated", default=None, help="自营 (no system fee) or 外包."
)
@click.option("--location", default=None)
@click.option("--contact", default=None)
@click.option("--phone", default=None)
@click.option("--notes", default=None)
@click.option("--seats", type=int, default=None, help="食堂容量: diners at once.")
@click.option("--meal", "meals", multiple=True, help="'lunch 11:30-13:30 12.00 [visitor price]'; repeatable.")
@click.option(
    "--no-meal", "no_meals", multiple=True, type=click.Choice(list(MEAL_PERIODS)), help="Stop serving a meal."
)
@click.option("--meal-limit", type=int, default=None, help="Meals per person per period.")
@click.option(
    "--typed-amount/--no-typed-amount",
    "typed_amount",
    default=None,
    help="The shop cashier may (not) type a free amount (自由金额) on the keypad.",
)
@click.option(
    "--typed-amount-cap",
    default=None,
    help="The most a typed amount may be, yuan (e.g. 50); 'none' removes the cap.",
)
@click.option(
    "--reversal-window",
    type=int,
    default=None,
    help="Minutes after a sale its terminal may reverse it (冲正; same day only; default 10, 0 = off).",
)
@JSON_OPTION
@click.pass_obj
def canteen_set(
    obj: Any,
    canteen_id: str,
    meals: tuple[str, ...],
    no_meals: tuple[str, ...],
    meal_limit: int | None,
    typed_amount: bool | None,
    typed_amount_cap: str | None,
    reversal_window: int | None,
    as_json: bool,
    **details: Any,
) -> None:
    """Change a canteen's details or rules; terminals get the new rules at once."""
    config: dict[str, Any] = {}
    if reversal_window is not None:
        config["reversal_window_minutes"] = reversal_window
    if meals or no_meals:
        config["meals"] = {**dict(parse_meal(s) for s in meals), **dict.fromkeys(no_meals)}
    if meal_limit is not None:
        config["meal_limit"] = meal_limit
    if typed_amount is not None:
        config["allow_typed_amount"] = typed_amount
    if typed_amount_cap is not None:
        cap = typed_amount_cap.strip().lower()
        config["max_typed_amount_fen"] = None if cap == "none" else yuan(typed_amount_cap)
    conn = obj.db()
    with write_txn(conn):
        row = canteens.update(
            conn,
            canteen_id,
            now_ms(),
            config=config or None,
            **{k: v for k, v in details.items() if v is not None},
        )
    data = canteens.to_json(row)
    emit(data, as_json, f"{data['id']} {data['name']} updated")


@canteen.command("item-set", context_settings=AMOUNT_SETTINGS)
@click.argument("canteen_id")
@click.argument("sku")
@click.argument("name")
@click.argument("price")
@click.argument("reference_price")
@click.option(
    "--barcode",
    "barcodes",
    multiple=True,
    help="A product barcode (EAN-13, EAN-8, UPC-A); repeat for several. Replaces the item's barcodes.",
)
@click.option("--no-barcodes", is_flag=True, help="Remove the item's barcodes.")
@JSON_OPTION
@click.pass_obj
def item_set(
    obj: Any,
    canteen_id: str,
    sku: str,
    name: str,
    price: str,
    reference_price: str,
    barcodes: tuple[str, ...],
    no_barcodes: bool,
    as_json: bool,
) -> None:
    """Add or change a shop item: PRICE and REFERENCE_PRICE in yuan; PRICE may not exceed it.
    Without --barcode the item keeps the barcodes it has."""
    if barcodes and no_barcodes:
        raise click.UsageError("--barcode and --no-barcodes contradict each other")
    codes = [] if no_barcodes else list(barcodes) or None
    conn = obj.db()
    with write_txn(conn):
        item = canteens.set_item(
            conn, canteen_id, sku, name, yuan(price), yuan(reference_price), now_ms(), barcodes=codes
        )
    emit(
        item,
        as_json,
        f"{sku} {item['name']} {format_fen(item['price_fen'])} "
        f"(参考价 reference {format_fen(item['reference_price_fen'])})"
        + (f" 条码 {'、'.join(item['barcodes'])}" if item.get("barcodes") else ""),
    )


@canteen.command("item-remove")
@click.argument("canteen_id")
@click.argument("sku")
@click.pass_obj
def item_remove(obj: Any, canteen_id: str, sku: str) -> None:
    """Stop selling a shop item."""
    conn = obj.db()
    with write_txn(conn):
        canteens.remove_item(conn, canteen_id, sku, now_ms())
    click.echo(f"{sku} removed")


@canteen.command("operator-set")
@click.argument("canteen_id")
@click.argument("card")
@click.option("--name", required=True, help="The operator's name, shown on the terminal (操作员).")
@click.pass_obj
def operator_set(obj: Any, canteen_id: str, card: str, name: str) -> None:
    """Let the operator card CARD reverse sales (冲正) at the canteen's terminals, with a
    6-digit operator PIN typed twice at the prompt (never shown; only a salted hash is
    kept and sent to the terminals, which check it offline). Again for a new PIN."""
    pin = click.prompt(
        "操作员密码（6位数字）operator PIN",
        hide_input=True,
        confirmation_prompt="再次输入 repeat",
        prompt_suffix=": ",
    )
    conn = obj.db()
    with write_txn(conn):
        canteens.update(conn, canteen_id, now_ms(), config={"operators": {card: {"name": name, "pin": pin}}})
    click.echo(f"{canteen_id}: 操作员 operator {card} {name} 已设置 set")


@canteen.command("operator-remove")
@click.argument("canteen_id")
@click.argument("card")
@click.pass_obj
def operator_remove(obj: Any, canteen_id: str, card: str) -> None:
    """The operator card CARD may no longer reverse sales at the canteen's terminals."""
    conn = obj.db()
    with write_txn(conn):
        row = canteens.get(conn, canteen_id)
        if card not in json.loads(row["config_json"]).get("operators", {}):
            raise DomainError("not_found", f"operator {card} of {canteen_id}")
        canteens.update(conn, canteen_id, now_ms(), config={"operators": {card: None}})
    click.echo(f"{canteen_id}: 操作员 operator {card} 已移除 removed")


@click.command("directory")
@JSON_OPTION
@click.pass_obj
def directory(obj: Any, as_json: bool) -> None:
    """The public canteen directory (食堂通讯录): where, whom to call, meal times and prices."""
    data = canteens.directory(obj.db())
    lines = []
    for e in data:
        meals = (
            "  ".join(f"{m['period_zh']} {m['start']}-{m['end']} {m['price']}" for m in e["meals"])
            or "(不供餐 no meals)"
        )
        lines.append(f"{e['name']}（{e['unit']}）{e['location']}  {e['contact']} {e['phone']}\n    {meals}")
    emit(data, as_json, "\n".join(lines) or "(none)")


COMMANDS = [import_canteens, import_items, unit, canteen, directory]
