"""Web console benchmarks (issue 14): whole pages as a browser gets them, through Flask.

* ``web.dashboard_p95_ms`` — ``GET /dashboard`` as a signed-in admin (session lookup, every
  query, the SVG chart, the template) on a database of 1,000,000 sales over a quarter, 100
  canteens, 60 units and 20,000 people; "today" is a day inside that quarter (about 11,000 of
  its sales). Target < 200 ms.
* ``web.person_search_p95_ms`` — ``GET /people?q=…`` (a 工号, a card number, part of a name,
  in turn) on the same database: the count, one page of 50 with each person's self purse.
  Target < 50 ms.

The sales are generated with bulk SQL (as ``server.settle_5m_s`` does, :mod:`bench.bench_server`),
which also fills what ingest and the registry keep beside them — the takings per 15 minutes
and per day (:mod:`server.sales.takings`) and the name index
(:mod:`server.registry.name_search`) — the way they are rebuilt from the data; the first
requests warm SQLite's cache and are not counted.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from bench.bench_server import _bulk_sales, _city
from bench.run import Context, Result
from server.app import create_app
from server.infra.db import open_db, write_txn
from server.web import accounts
from shared.clock import FakeClock, ms_from_china

PASSWORD = "Bench2026pw"


def _p95(times: list[float]) -> float:
    return round(statistics.quantiles(times, n=20)[-1] * 1000, 1)


def _timed(client, urls: list[str], warm: int = 3) -> list[float]:  # noqa: ANN001
    for url in urls[:warm]:
        assert client.get(url).status_code == 200, url
    times = []
    for url in urls:
        t0 = time.perf_counter()
        resp = client.get(url)
        times.append(time.perf_counter() - t0)
        assert resp.status_code == 200, url
    return times


def web_pages(ctx: Context, sales: int = 1_000_000, people: int = 20_000, rounds: int = 40) -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        now = ms_from_china("2026-02-10T12:30")
        app = create_app({"HOME": tmp, "TESTING": True}, clock=FakeClock(now))
        conn = open_db(app.config["DATABASE"])
        _city(conn, 100, units=60, holders=people, now_ms=now)
        t0 = time.perf_counter()
        _bulk_sales(conn, sales, 100, units=60, holders=people)
        generate_s = time.perf_counter() - t0
        with write_txn(conn):
            accounts.add_staff(conn, "bench", "admin", PASSWORD, now)
            conn.execute("UPDATE web_accounts SET must_change = 0")
        today = conn.execute(
            "SELECT count(*) FROM sales WHERE occurred_at_ms >= ? AND occurred_at_ms < ?",
            (ms_from_china("2026-02-10T00:00"), ms_from_china("2026-02-11T00:00")),
        ).fetchone()[0]
        conn.close()

        client = app.test_client()
        page = client.get("/login").get_data(as_text=True)
        token = page.split('name="csrf_token"')[1].split('value="')[1].split('"')[0]
        assert (
            client.post(
                "/login", data={"csrf_token": token, "username": "bench", "password": PASSWORD}
            ).status_code
            == 302
        )

        dash = _timed(client, ["/dashboard"] * rounds)
        queries = []
        for i in range(rounds):
            h = (i * 7919) % people
            queries += [f"/people?q={h}", f"/people?q=K{h:06d}", "/people?q=职工&page=7"]
        search = _timed(client, queries)
    params = {
        "sales": sales,
        "people": people,
        "canteens": 100,
        "today_sales": today,
        "generate_s": round(generate_s, 1),
    }
    return [
        Result(
            "web.dashboard_p95_ms", _p95(dash), "ms", {**params, "requests": len(dash)}, target="< 200 ms"
        ),
        Result(
            "web.person_search_p95_ms",
            _p95(search),
            "ms",
            {**params, "requests": len(search), "median_ms": round(statistics.median(search) * 1000, 1)},
            target="< 50 ms",
        ),
    ]


BENCHMARKS = [web_pages]
