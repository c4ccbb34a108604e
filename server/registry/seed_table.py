"""The seed's attachment table (“食堂一卡通”信息统计表) read into canteen plans. Pure.

Columns of the seed's table, in any of the spellings a clerk would type (with or without
the units in brackets, full- or half-width brackets, spaces inside the cell, or the price
columns under a merged "餐位标准(元/餐)" header on a second row)::

    单位名称 | 食堂数量(个) | 服务员人数(人) | 食堂容量(人) | 就餐面积(平方)
    | 早餐 | 中餐 | 晚餐 (餐位标准, 元/餐) | 食堂地点 | 联系人 | 联系电话 | 备注

The prices may also be one column, 餐位标准（早餐/中餐/晚餐）, with the three prices in one
cell: ``5/12/10`` (``无`` or ``-`` for a meal not served). The headers clerks type for the
other columns work too: 食堂位置, 食堂面积（平方米）, 餐位数量, 用餐人数. 序号 is read past; any
column the import does not store (a column of the clerk's own) is listed in ``unused``.

Optional extra columns for what the seed's table does not carry: 食堂名称, 经营单位
(the operator company), 经营方式 (自营 / 外包), 早餐时间 … ("07:00-09:00"), and visitor
prices 早餐访客价 … (what diners from other units pay).

**食堂数量 (number of canteens).** The seed's table has one row per unit. The rule:

* a unit with one row and 食堂数量 blank or 1 has one canteen, named "<单位>食堂" unless
  食堂名称 says otherwise; 食堂数量 0 means the unit has no canteen (its staff still eat
  elsewhere) and the row creates nothing;
* a unit with one row and 食堂数量 N > 1 gets N canteens sharing the row's prices, times,
  operator and contact. 食堂名称, 食堂地点, 服务员人数, 食堂容量 and 就餐面积 may list N
  values separated by 、 or ； (one per canteen); a single 食堂地点 is shared, a single
  number is refused (it cannot be split honestly). Names default to "<单位>第一食堂" …;
* a unit may instead give one row per canteen; then 食堂数量, where filled in, must equal
  the number of rows.

Meal prices are yuan with at most two decimals ("12", "12.5", "12.50元"); a blank price
(or 无, —) means the canteen does not serve that meal. Times default to 07:00–09:00,
11:30–13:30, 17:30–19:30.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from server.infra.csvinput import LineError, Table, parse_area, parse_count, read_table
from server.registry.canteen_config import DEFAULT_TIMES, MEAL_PERIODS, hhmm, minutes
from shared.errors import DomainError
from shared.money import parse_yuan

_MEAL_ZH = {
    "breakfast": ("早餐", "早饭"),
    "lunch": ("中餐", "午餐", "中饭", "午饭"),
    "dinner": ("晚餐", "晚饭"),
}


def _aliases() -> dict[str, str]:
    a: dict[str, str] = {}

    def add(key: str, *names: str) -> None:
        for n in names:
            a[n] = key

    add("unit", "单位名称", "单位", "单位全称", "所属单位", "单位名")
    add("count", "食堂数量", "食堂数", "食堂个数", "数量")
    add("service_staff", "服务员人数", "服务员", "服务员数", "服务人员", "服务人员人数", "服务员数量")
    add("seats", "食堂容量", "容量", "就餐容量", "可同时就餐人数", "餐位数", "餐位数量", "座位数", "座位数量")
    add("area", "就餐面积", "面积", "就餐面积平方", "就餐面积平方米", "就餐面积平米", "就餐面积m2")
    add("area", "食堂面积", "食堂面积平方米", "食堂面积平方", "用餐面积")
    add("meal_standard", "餐位标准", "餐标", "餐费标准", "就餐标准", "用餐标准")
    add("row_no", "序号", "序")
    add("diners", "用餐人数", "就餐人数")
    add("location", "食堂地点", "地点", "食堂地址", "地址", "食堂位置", "位置")
    add("contact", "联系人", "负责人", "食堂联系人")
    add("phone", "联系电话", "电话", "联系方式", "手机", "手机号", "电话号码")
    add("notes", "备注", "说明")
    add("name", "食堂名称", "食堂名", "名称")
    add(
        "operator",
        "经营单位",
        "运营单位",
        "经营方",
        "运营方",
        "经营者",
        "食堂经营者",
        "承包方",
        "运营公司",
        "经营公司",
    )
    add("mode", "经营方式", "运营方式", "经营模式", "是否自营", "自营外包")
    for period, names in _MEAL_ZH.items():
        for zh in names:
            add(
                f"price_{period}",
                zh,
                f"{zh}价格",
                f"{zh}标准",
                f"{zh}价",
                f"餐位标准{zh}",
                f"餐标{zh}",
                f"{zh}餐标",
            )
            add(f"time_{period}", f"{zh}时间", f"{zh}时段", f"{zh}供餐时间", f"{zh}就餐时间")
            add(
                f"visitor_{period}",
                f"{zh}访客价",
                f"{zh}访客价格",
                f"{zh}外单位价",
                f"{zh}外单位价格",
                f"外单位{zh}",
                f"访客{zh}",
            )
    return a


ALIASES = _aliases()
REQUIRED = {"unit"}
NOT_STORED: set[str] = set()  # columns the import understands but the registry does not keep
_STANDARD_SPLIT = re.compile(r"\s*[/／、|]\s*")
_SPLIT = re.compile(r"[、;；|]")
_TIME_RANGE = re.compile(r"^\s*(\d{1,2}[:：]\d{2})\s*[-~～—–至到]+\s*(\d{1,2}[:：]\d{2})\s*$")
_NOT_SERVED = {"", "无", "-", "—", "/", "不供应", "不提供"}
_SELF = {"自营", "是", "y", "yes", "自办"}
_OUTSOURCED = {"外包", "否", "n", "no", "委托", "委托运营", "承包", "包餐", "包餐制", "托管"}
_ORDINALS = "一二三四五六七八九十"


@dataclass
class CanteenPlan:
    """One canteen as the file describes it. ``None`` means "not given": keep what is stored."""

    line: int
    unit_name: str
    name: str
    location: str | None = None
    contact: str | None = None
    phone: str | None = None
    notes: str | None = None
    service_staff: int | None = None
    seats: int | None = None
    diners: int | None = None  # 用餐人数: the people who eat there
    dining_area_m2: float | None = None
    operator: str | None = None
    self_operated: bool | None = None
    # period -> meal config dict, or None for "not served"; absent: the file has no price column
    meals: dict[str, dict[str, object] | None] = field(default_factory=dict)


@dataclass
class SeedTable:
    """What :func:`parse` read: the canteen plans, the line errors that refuse the file,
    every unit the file names (with its first line), and the columns it did not use."""

    plans: list[CanteenPlan]
    errors: list[LineError]
    units: dict[str, int]
    unused: list[str]

    def __iter__(self):  # noqa: ANN204 - (plans, errors, units) as before
        return iter((self.plans, self.errors, self.units))


@dataclass
class ParsedRow:
    line: int
    cells: dict[str, str]
    count: int | None


def parse(data: bytes | str) -> SeedTable:
    """Canteen plans from the file, the line errors that refuse it, every unit the file
    names (with its first line), canteens or not, and the columns it does not use."""
    table = read_table(data, ALIASES, REQUIRED, "canteen table")
    unused = table.unknown + [table.columns[k] for k in sorted(NOT_STORED & set(table.columns))]
    errors: list[LineError] = []
    by_unit: dict[str, list[ParsedRow]] = {}
    for line, cells in table.rows:
        if not cells["unit"] and not any(cells.values()):
            continue
        if cells["unit"].startswith(("填表说明", "说明", "注：", "注:")):
            continue
        if not cells["unit"]:
            errors.append(LineError(line, table.columns["unit"], "invalid_input", "单位名称 is blank"))
            continue
        count = parse_count(cells.get("count", ""), line, table.columns.get("count", ""), errors)
        by_unit.setdefault(cells["unit"], []).append(ParsedRow(line, cells, count))
    plans: list[CanteenPlan] = []
    for unit_name, rows in by_unit.items():
        if len(rows) == 1:
            plans += _expand(rows[0], unit_name, table, errors)
            continue
        for i, row in enumerate(rows, start=1):
            if row.count is not None and row.count != len(rows):
                errors.append(
                    LineError(
                        row.line,
                        table.columns["count"],
                        "invalid_input",
                        f"食堂数量 says {row.count} but {unit_name} has {len(rows)} rows (one per canteen)",
                    )
                )
                continue
            plans += _expand(row, unit_name, table, errors, ordinal=i, forced_count=1)
    seen: dict[str, int] = {}
    for p in plans:
        if p.name in seen:
            errors.append(
                LineError(
                    p.line,
                    table.columns.get("name", "食堂名称"),
                    "already_exists",
                    f"canteen name {p.name!r} also on line {seen[p.name]}",
                )
            )
        seen.setdefault(p.name, p.line)
    return SeedTable(plans, errors, {unit: rows[0].line for unit, rows in by_unit.items()}, unused)


def _expand(
    row: ParsedRow,
    unit: str,
    table: Table,
    errors: list[LineError],
    *,
    ordinal: int = 0,
    forced_count: int | None = None,
) -> list[CanteenPlan]:
    n = forced_count if forced_count is not None else (1 if row.count is None else row.count)
    if n == 0:
        return []
    cells, line, col = row.cells, row.line, table.columns
    before = len(errors)

    def parts(key: str) -> list[str]:
        value = cells.get(key, "")
        return [p.strip() for p in _SPLIT.split(value)] if value else []

    def per_canteen(key: str, shared_ok: bool) -> list[str | None]:
        given = parts(key)
        if key not in cells or not given:
            return [None] * n
        if len(given) == n:
            return list(given)
        if len(given) == 1 and shared_ok:
            return [given[0]] * n
        errors.append(
            LineError(
                line,
                col[key],
                "invalid_input",
                f"食堂数量 is {n}: give {n} values separated by 、 (one per canteen), or one row per canteen",
            )
        )
        return [None] * n

    names, locations = per_canteen("name", False), per_canteen("location", True)
    staff, seats, areas, diners = (
        per_canteen("service_staff", False),
        per_canteen("seats", False),
        per_canteen("area", False),
        per_canteen("diners", False),
    )
    meals = _meals(cells, line, col, errors)
    operator = cells.get("operator", "").strip() if "operator" in cells else None
    mode = _mode(cells, line, col, errors)
    if mode is True and not operator:
        operator = unit  # a self-run canteen is run by the unit itself
    distinct_places = (n > 1 and len(parts("location")) == n) or bool(ordinal and parts("location"))
    out = []
    for i in range(n):
        index = ordinal or (i + 1 if n > 1 else 0)
        out.append(
            CanteenPlan(
                line=line,
                unit_name=unit,
                name=names[i] or _default_name(unit, index, locations[i] if distinct_places else None),
                location=locations[i] if "location" in cells else None,
                contact=cells.get("contact") if "contact" in cells else None,
                phone=cells.get("phone") if "phone" in cells else None,
                notes=cells.get("notes") if "notes" in cells else None,
                service_staff=parse_count(staff[i] or "", line, col.get("service_staff", ""), errors),
                seats=parse_count(seats[i] or "", line, col.get("seats", ""), errors),
                diners=parse_count(diners[i] or "", line, col.get("diners", ""), errors),
                dining_area_m2=parse_area(areas[i] or "", line, col.get("area", ""), errors),
                operator=operator,
                self_operated=mode,
                meals=meals,
            )
        )
    return out if len(errors) == before else []


def _default_name(unit: str, index: int, location: str | None) -> str:
    if location:
        return f"{unit}食堂（{location}）"
    if index == 0:
        return f"{unit}食堂"
    return f"{unit}第{_ORDINALS[index - 1] if index <= len(_ORDINALS) else index}食堂"


def _mode(cells: dict[str, str], line: int, col: dict[str, str], errors: list[LineError]) -> bool | None:
    value = cells.get("mode", "").strip().lower()
    if not value:
        return None
    if value in _SELF:
        return True
    if value in _OUTSOURCED:
        return False
    errors.append(LineError(line, col["mode"], "invalid_input", f"{value!r}: write 自营 or 外包"))
    return None


def _meals(
    cells: dict[str, str], line: int, col: dict[str, str], errors: list[LineError]
) -> dict[str, dict[str, object] | None]:
    meals: dict[str, dict[str, object] | None] = {}
    standard = _standard(cells, line, col, errors)
    for period in MEAL_PERIODS:
        key = f"price_{period}"
        if key not in cells and period not in standard:
            continue
        raw = standard[period] if period in standard else cells[key].strip()
        if period in standard:
            key = "meal_standard"
        if raw in _NOT_SERVED:
            meals[period] = None
            continue
        price = _yuan(raw, line, col[key], errors)
        # only what the file gives: a stored time or visitor price the file has no value for stays
        meal: dict[str, object] = {"price_fen": price}
        vkey = f"visitor_{period}"
        if cells.get(vkey, "").strip() not in _NOT_SERVED:
            meal["visitor_price_fen"] = _yuan(cells[vkey].strip(), line, col[vkey], errors)
        tkey = f"time_{period}"
        if cells.get(tkey, "").strip():
            m = _TIME_RANGE.match(cells[tkey].replace("：", ":"))
            try:
                if not m:
                    raise DomainError(
                        "invalid_input", f"{cells[tkey]!r}: write a time range like 11:30-13:30"
                    )
                meal["start"], meal["end"] = hhmm(minutes(m.group(1))), hhmm(minutes(m.group(2)))
            except DomainError as exc:
                errors.append(LineError(line, col[tkey], exc.code, exc.detail))
        if price is not None:
            meals[period] = meal
    return meals


def with_defaults(meal: dict[str, object], period: str) -> dict[str, object]:
    """A meal the file gives, completed for a canteen that does not serve it yet."""
    start, end = DEFAULT_TIMES[period]
    return {"start": start, "end": end, "visitor_price_fen": None, **meal}


def _standard(
    cells: dict[str, str], line: int, col: dict[str, str], errors: list[LineError]
) -> dict[str, str]:
    """餐位标准 ``5/12/10`` → {breakfast: "5", lunch: "12", dinner: "10"}; {} if not given."""
    raw = cells.get("meal_standard", "").strip()
    if not raw:
        return {}
    if any(f"price_{p}" in cells for p in MEAL_PERIODS):
        errors.append(
            LineError(
                line,
                col["meal_standard"],
                "invalid_input",
                "prices are given twice: in 餐位标准 and in 早餐/中餐/晚餐 columns; keep one",
                "价格重复：餐位标准 与 早餐/中餐/晚餐 列只保留一种",
            )
        )
        return {}
    parts = _STANDARD_SPLIT.split(raw.replace("元/餐", "").replace("元", ""))
    if len(parts) != len(MEAL_PERIODS):
        errors.append(
            LineError(
                line,
                col["meal_standard"],
                "invalid_input",
                f"{raw!r}: write breakfast/lunch/dinner prices in yuan, like 5/12/10 "
                "(无 for a meal not served)",
                f"“{raw}”：请按 早餐/中餐/晚餐 填写三个价格，如 5/12/10（不供应的餐次填 无）",
            )
        )
        return {}
    return dict(zip(MEAL_PERIODS, parts, strict=True))


def _yuan(raw: str, line: int, column: str, errors: list[LineError]) -> int | None:
    text = raw.removesuffix("元/餐").removesuffix("元").strip().lstrip("¥￥").strip()
    try:
        fen = parse_yuan(text)
    except DomainError as exc:
        errors.append(LineError(line, column, exc.code, f"{raw!r}: yuan with at most two decimals"))
        return None
    if fen <= 0:
        errors.append(
            LineError(
                line,
                column,
                "bad_amount",
                f"{raw!r}: a price must be above ¥0.00 (leave it blank if not served)",
            )
        )
        return None
    return fen
