"""``registry.*``: how long the clerks' imports take on a city-sized file.

* ``registry.roster_import_rows_per_s`` — a 20,000-person roster (one unit per 500 staff)
  imported into an empty database, in one transaction, on a file-backed database with
  the server's settings (WAL, synchronous=FULL);
* ``registry.roster_reimport_rows_per_s`` — the same file again (every row checked, nothing
  written): the cost of the idempotent re-import clerks do each quarter;
* ``registry.canteen_import_ms`` — a 200-unit seed table (信息统计表).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.run import Context, Result
from server.infra.db import open_db, write_txn
from server.registry import canteens, roster
from server.registry import units as registry

NOW = 1_767_672_000_000


def _roster(n: int, per_unit: int) -> bytes:
    lines = ["单位名称,姓名,工号,卡号"]
    lines += [f"单位{i // per_unit:03d},职工{i},NO{i:06d},04{i:010X}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def roster_import(ctx: Context, n: int = 20_000, per_unit: int = 500) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_db(Path(tmp) / "bench.sqlite")
        with write_txn(conn):
            for u in range((n + per_unit - 1) // per_unit):
                registry.add_unit(conn, f"U{u:03d}", f"单位{u:03d}", 30_000)
        data = _roster(n, per_unit)
        t0 = time.perf_counter()
        with write_txn(conn):
            first = roster.import_roster(conn, data, NOW)
        t1 = time.perf_counter()
        with write_txn(conn):
            again = roster.import_roster(conn, data, NOW)
        t2 = time.perf_counter()
        conn.close()
    assert first["new_holders"] == n and again["unchanged"] == n
    params = {"rows": n, "units": (n + per_unit - 1) // per_unit}
    return [
        Result("registry.roster_import_rows_per_s", round(n / (t1 - t0)), "rows/s", params),
        Result("registry.roster_reimport_rows_per_s", round(n / (t2 - t1)), "rows/s", params),
    ]


def canteen_import(ctx: Context, units: int = 200) -> list[Result]:
    lines = [
        "单位名称,食堂数量(个),服务员人数(人),食堂容量(人),就餐面积(平方),早餐(元/餐),中餐(元/餐),晚餐(元/餐),食堂地点,联系人,联系电话,备注"
    ]
    lines += [f"单位{u:03d},1,8,200,350,5,12,10,地点{u},联系人{u},0731-2868{u:04d}," for u in range(units)]
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_db(Path(tmp) / "bench.sqlite")
        t0 = time.perf_counter()
        with write_txn(conn):
            report = canteens.import_table(conn, "\n".join(lines).encode(), NOW, create_units=True)
        elapsed = time.perf_counter() - t0
        conn.close()
    assert len(report["created"]) == units
    return [Result("registry.canteen_import_ms", round(elapsed * 1000, 1), "ms", {"units": units})]


BENCHMARKS = [roster_import, canteen_import]
