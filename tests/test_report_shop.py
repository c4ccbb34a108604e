"""``canteen-server report shop``: shop sales by item per canteen, for a day or a quarter."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from server.infra.db import open_db, write_txn
from server.registry import canteens
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.protocol import topics
from shared.protocol.messages import Item
from tests.helpers import sale, signed_batch, terminal
from tests.test_cli_money import home, run  # noqa: F401  (the fixture)

TYPED_FEN = 1000  # a sale without items: an amount the cashier typed


def sell_items(home: Path, sales: list[tuple[int, tuple[Item, ...]]]) -> None:  # noqa: F811
    conn = open_db(home / "server" / "canteen.sqlite")
    at = sales[0][0]
    with write_txn(conn):
        canteens.set_item(conn, "C01", "water", "矿泉水", 200, 250, at, barcodes=["6901234567892"])
        canteens.set_item(conn, "C01", "tissue", "=抽纸", 350, 400, at)
    creds = terminal(conn, "C01", at)
    batch = [
        sale(creds, n, "K1", sum(i.qty * i.unit_price_fen for i in items) or TYPED_FEN, at_ms, items=items)
        for n, (at_ms, items) in enumerate(sales, start=1)
    ]
    last = max(at_ms for at_ms, _ in sales)
    IngestWorker(conn, FakeClock(last), lambda *_: True).process(
        [(topics.sales(creds.terminal_id), signed_batch(creds, batch, last))]
    )
    statuses = [r[0] for r in conn.execute("SELECT status FROM sales")]
    conn.close()
    assert statuses == ["applied"] * len(sales), statuses


def test_shop_sales_by_item_for_a_day_a_quarter_and_as_csv(home: Path, tmp_path: Path) -> None:  # noqa: F811
    day1, day2 = ms_from_china("2024-01-05T12:00"), ms_from_china("2024-02-01T09:00")
    water, tissue = Item("water", 2, 200), Item("tissue", 1, 350)
    sell_items(home, [(day1, (water, tissue)), (day1 + 60_000, (water,)), (day2, (Item("water", 1, 200),))])

    code, out = run(home, "report", "shop", "--date", "2024-01-05", "--json")
    assert code == 0, out
    by_sku = {r["sku"]: r for r in json.loads(out)["items"]}
    assert (by_sku["water"]["qty"], by_sku["water"]["amount_fen"], by_sku["water"]["sales"]) == (4, 800, 2)
    assert (by_sku["tissue"]["qty"], by_sku["tissue"]["amount_fen"]) == (1, 350)

    out_csv = tmp_path / "shop.csv"
    code, out = run(home, "report", "shop", "2024Q1", "--canteen", "C01", "--csv", str(out_csv))
    assert code == 0, out
    assert "矿泉水: 5 件 ¥10.00" in out and "合计 total: 6 件 ¥13.50" in out
    text = out_csv.read_text(encoding="utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(text.lstrip("\ufeff").splitlines()))
    assert rows[0][:4] == ["食堂编号", "食堂名称", "商品编号", "商品名称"]
    assert ["C01", "财政局食堂", "tissue", "'=抽纸", "1", "1", "3.50", "350"] in rows  # formula-safe
    assert ["C01", "财政局食堂", "water", "矿泉水", "3", "5", "10.00", "1000"] in rows

    assert json.loads(run(home, "report", "shop", "2024Q2", "--json")[1])["items"] == []
    code, out = run(home, "report", "shop", "--canteen", "C99")
    assert code == 2 and "unknown_canteen" in out


def test_shop_sales_by_canteen_per_day_count_sales_once_and_typed_amounts_too(
    home: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    day1, day2 = ms_from_china("2024-01-05T12:00"), ms_from_china("2024-02-01T09:00")
    sell_items(
        home,
        [
            (day1, (Item("water", 2, 200), Item("tissue", 1, 350))),
            (day1 + 60_000, ()),
            (day2, (Item("water", 1, 200),)),
        ],
    )
    code, out = run(home, "report", "shop", "2024Q1", "--by", "canteen", "--per-day", "--json")
    assert code == 0, out
    data = json.loads(out)
    rows = [(r["day"], r["canteen_id"], r["sales"], r["qty"], r["amount_fen"]) for r in data["canteens"]]
    # the second sale of day 1 is a typed amount: it counts, with no pieces
    assert rows == [("2024-01-05", "C01", 2, 3, 750 + TYPED_FEN), ("2024-02-01", "C01", 1, 1, 200)]
    assert data["totals"] == {"sales": 3, "qty": 4, "amount_fen": 1950}
    out_csv = tmp_path / "by_canteen.csv"
    code, out = run(home, "report", "shop", "2024Q1", "--by", "canteen", "--per-day", "--csv", str(out_csv))
    assert code == 0 and "按食堂 by canteen" in out and "2024-01-05 C01 财政局食堂: 3 件 ¥17.50 (2 笔)" in out
    csv_rows = list(csv.reader(out_csv.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()))
    assert csv_rows[0] == ["日期", "食堂编号", "食堂名称", "笔数", "数量", "金额(元)", "金额(分)"]
    assert csv_rows[1] == ["2024-01-05", "C01", "财政局食堂", "2", "3", "17.50", "1750"]
    code, out = run(home, "report", "shop", "--date", "2024-02-01", "--per-day", "--json")
    assert [(r["day"], r["sku"], r["qty"]) for r in json.loads(out)["items"]] == [("2024-02-01", "water", 1)]
