"""A generated city for ``canteen-sim city``: units, canteens, staff and their habits. Pure.

:func:`plan_city` makes, from a seed, everything the city's clerks would hand in:

* **units** (市直单位) with their per-person quarterly standard; the first ones are the
  bureaus named in the seed, the rest numbered;
* the seed's attachment table (“食堂一卡通”信息统计表, :func:`canteen_table_csv`): one row
  per unit — 食堂数量 0 for a unit without a canteen — with staff, seats, dining area,
  the three meal prices, place, contact and phone, plus the optional columns the import
  also reads (经营单位, 经营方式, 中餐访客价);
* shop items with big-store reference prices (:func:`items_csv`) and the staff roster
  (:func:`roster_csv`);
* per diner: the canteen they usually eat at (their own unit's; a unit without a canteen
  has one or two nearby) and how they like to pay (card, the phone's QR code, or face).
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass

UNIT_NAMES = (
    "市财政局",
    "市教育局",
    "市审计局",
    "市卫健委",
    "市发改委",
    "市国资委",
    "市城管局",
    "市机关事务管理局",
    "市公共资源交易中心",
    "市人社局",
    "市民政局",
    "市司法局",
    "市自然资源局",
    "市生态环境局",
    "市住建局",
    "市交通运输局",
    "市水利局",
    "市农业农村局",
    "市商务局",
    "市文旅广体局",
    "市应急管理局",
    "市市场监管局",
    "市统计局",
    "市医保局",
    "市信访局",
    "市林业局",
    "市科技局",
    "市工信局",
    "市退役军人事务局",
    "市档案馆",
    "市图书馆",
    "市中心医院",
    "市人民医院",
    "市中医院",
    "市妇幼保健院",
    "市第一中学",
    "市第二中学",
    "市职业技术学院",
    "市气象局",
    "市税务局",
)
OPERATORS = (
    "湘味餐饮有限公司",
    "株洲团餐服务有限公司",
    "神农膳食管理有限公司",
    "炎帝餐饮服务有限公司",
    "湘江后勤服务有限公司",
)
ITEMS = (  # sku, name, price (yuan), big-store reference price (yuan)
    ("tissue", "抽纸", "3.50", "4.00"),
    ("water", "矿泉水", "1.80", "2.00"),
    ("soap", "香皂", "4.50", "5.00"),
    ("noodles", "方便面", "4.00", "4.50"),
    ("milk", "纯牛奶", "3.00", "3.00"),
    ("fruit", "水果切盘", "6.00", "6.50"),
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国红玉兰文斌慧婷宇"
PAYS = ("card", "qr", "face")


@dataclass(frozen=True)
class UnitPlan:
    name: str
    standard_yuan: int


@dataclass(frozen=True)
class CanteenPlan:
    name: str
    unit: str
    operator: str
    self_operated: bool
    breakfast: str  # yuan, "" = not served
    lunch: str
    dinner: str
    lunch_visitor: str  # "" = same price for visitors
    seats: int
    staff: int
    area_m2: int
    location: str
    contact: str
    phone: str
    quality_bands: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DinerPlan:
    card: str
    name: str
    unit: str
    staff_no: str
    home: str  # the canteen they usually eat at
    pays: str  # card | qr | face


@dataclass(frozen=True)
class CityPlan:
    units: tuple[UnitPlan, ...]
    canteens: tuple[CanteenPlan, ...]
    diners: tuple[DinerPlan, ...]

    def canteen(self, name: str) -> CanteenPlan:
        return next(c for c in self.canteens if c.name == name)


def plan_city(
    units: int, diners: int, canteens: int, seed: int = 7, qr_share: float = 0.1, face_share: float = 0.05
) -> CityPlan:
    """A city of ``units`` units (the first ``canteens`` of them run a canteen) and ``diners`` staff."""
    if units < 1 or diners < 1 or not 1 <= canteens <= units:
        raise ValueError("need units ≥ 1, diners ≥ 1 and 1 ≤ canteens ≤ units")
    rng = random.Random(seed)
    names = [UNIT_NAMES[i] if i < len(UNIT_NAMES) else f"市直单位{i + 1:03d}" for i in range(units)]
    unit_plans = tuple(UnitPlan(n, rng.choice((240, 270, 300, 330, 360))) for n in names)
    canteen_plans = tuple(_canteen(names[i], i, rng) for i in range(canteens))
    weights = [rng.uniform(0.3, 3.0) for _ in names]
    # a unit without a canteen eats at one or two canteens nearby
    nearby = {
        n: rng.sample([c.name for c in canteen_plans], min(2, len(canteen_plans))) for n in names[canteens:]
    }
    people: list[DinerPlan] = []
    for i in range(diners):
        unit = names[i] if i < units else rng.choices(names, weights)[0]  # every unit has someone
        own = [c.name for c in canteen_plans if c.unit == unit]
        home = own[0] if own else nearby[unit][0] if rng.random() < 0.7 else nearby[unit][-1]
        roll = rng.random()
        pays = "qr" if roll < qr_share else "face" if roll < qr_share + face_share else "card"
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + (rng.choice(GIVEN) if rng.random() < 0.7 else "")
        people.append(DinerPlan(f"C{i + 1:06d}", name, unit, f"S{i + 1:06d}", home, pays))
    return CityPlan(unit_plans, canteen_plans, tuple(people))


def _canteen(unit: str, i: int, rng: random.Random) -> CanteenPlan:
    self_operated = rng.random() < 0.3
    lunch = rng.choice((10, 11, 12, 13, 15))
    return CanteenPlan(
        name=f"{unit}食堂",
        unit=unit,
        operator=unit if self_operated else rng.choice(OPERATORS),
        self_operated=self_operated,
        breakfast=str(rng.choice((4, 5, 6))),
        lunch=str(lunch),
        dinner=str(rng.choice((8, 10, 12))) if rng.random() < 0.7 else "",
        lunch_visitor=str(lunch + 3) if rng.random() < 0.5 else "",
        seats=rng.choice((80, 120, 150, 200, 300)),
        staff=rng.randint(4, 16),
        area_m2=rng.choice((150, 200, 260, 320, 400, 520)),
        location=f"{unit}机关大院{rng.randint(1, 5)}号楼{rng.randint(1, 3)}楼",
        contact=rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
        phone=f"0731-28{rng.randint(100000, 999999)}",
        quality_bands=((90, 100), (80, 98), (0, 95)),
    )


def _csv(header: list[str], rows: list[list[object]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue()


def canteen_table_csv(plan: CityPlan) -> str:
    """The seed's 信息统计表, one row per unit (食堂数量 0: no canteen), plus 经营单位,
    经营方式 and 中餐访客价."""
    header = [
        "单位名称",
        "食堂数量(个)",
        "服务员人数(人)",
        "食堂容量(人)",
        "就餐面积(平方)",
        "早餐",
        "中餐",
        "晚餐",
        "食堂地点",
        "联系人",
        "联系电话",
        "备注",
        "经营单位",
        "经营方式",
        "中餐访客价",
    ]
    rows: list[list[object]] = []
    for u in plan.units:
        c = next((c for c in plan.canteens if c.unit == u.name), None)
        if c is None:
            rows.append([u.name, 0] + [""] * 13)
            continue
        rows.append(
            [
                u.name,
                1,
                c.staff,
                c.seats,
                c.area_m2,
                c.breakfast,
                c.lunch,
                c.dinner,
                c.location,
                c.contact,
                c.phone,
                "对外开放" if c.lunch_visitor else "",
                c.operator,
                "自营" if c.self_operated else "外包",
                c.lunch_visitor,
            ]
        )
    return _csv(header, rows)


def items_csv(plan: CityPlan) -> str:
    """Every canteen shop's goods: 食堂名称, 商品编号, 商品名称, 售价, 参考价."""
    rows = [[c.name, sku, name, price, ref] for c in plan.canteens for sku, name, price, ref in ITEMS]
    return _csv(["食堂名称", "商品编号", "商品名称", "售价", "参考价"], rows)


def roster_csv(plan: CityPlan) -> str:
    """The staff roster (信息统计表 of people): 单位名称, 姓名, 工号, 卡号."""
    return _csv(
        ["单位名称", "姓名", "工号", "卡号"], [[d.unit, d.name, d.staff_no, d.card] for d in plan.diners]
    )
