"""The money endpoints over HTTP: what each role can do, and the files they get."""

from __future__ import annotations

import functools
import sqlite3

import pytest

from server.closing import quality
from server.infra.auth import MAX_EXPIRY_DAYS, create_token
from server.infra.db import write_txn
from shared.clock import FakeClock, ms_from_china
from tests.money_world import OPERATOR, SELF_OPERATOR, MoneyWorld


class Api:
    def __init__(self, client, conn: sqlite3.Connection, clock: FakeClock) -> None:  # noqa: ANN001
        self.client = client
        # the money world runs its fake clock through a whole year: tokens that outlive it
        token = functools.partial(create_token, conn, expires_days=MAX_EXPIRY_DAYS)
        with write_txn(conn):
            self.tokens = {
                "admin": token("admin", clock.now_ms()),
                "auditor": token("auditor", clock.now_ms()),
                "clerk_u01": token("clerk", clock.now_ms(), unit_id="U01"),
                "clerk_u02": token("clerk", clock.now_ms(), unit_id="U02"),
                "operator": token("operator", clock.now_ms(), operator=OPERATOR),
                "diner_h001": token("diner", clock.now_ms(), holder_id="H001"),
                "diner_h002": token("diner", clock.now_ms(), holder_id="H002"),
            }

    def __call__(self, who: str, method: str, url: str, body: dict | None = None):  # noqa: ANN204
        return self.client.open(
            url, method=method, json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"}
        )


@pytest.fixture
def world(conn: sqlite3.Connection, clock: FakeClock) -> MoneyWorld:
    return MoneyWorld(conn, clock)


@pytest.fixture
def api(client, conn: sqlite3.Connection, clock: FakeClock, world: MoneyWorld) -> Api:  # noqa: ANN001
    return Api(client, conn, clock)


def test_a_clerk_allocates_for_their_own_unit_only(api: Api) -> None:
    ok = api("clerk_u01", "POST", "/api/v1/allocations", {"unit_id": "U01", "quarter": "2026Q1"})
    assert ok.status_code == 201
    assert ok.get_json() == {
        "unit_id": "U01",
        "quarter": "2026Q1",
        "holders": 2,
        "per_person_fen": 30_000,
        "total_fen": 60_000,
        "late": False,
    }
    other = api("clerk_u01", "POST", "/api/v1/allocations", {"unit_id": "U02", "quarter": "2026Q1"})
    assert (other.status_code, other.get_json()["code"]) == (403, "forbidden")
    again = api("admin", "POST", "/api/v1/allocations", {"unit_id": "U01", "quarter": "2026Q1"})
    assert (again.status_code, again.get_json()["code"]) == (409, "already_exists")
    listed = api("clerk_u02", "GET", "/api/v1/allocations").get_json()
    assert listed == []


def test_a_top_up_in_yuan_lands_in_the_self_purse_and_a_repeated_bank_ref_is_refused(api: Api) -> None:
    r = api("admin", "POST", "/api/v1/topups", {"card_id": "K001", "amount": "12.50", "ref": "CCB-1"})
    assert (r.status_code, r.get_json()) == (201, {"card_id": "K001", "self_fen": 1250})
    again = api("admin", "POST", "/api/v1/topups", {"card_id": "K001", "amount": "12.50", "ref": "CCB-1"})
    assert (again.status_code, again.get_json()["code"]) == (409, "already_exists")
    bad = api("admin", "POST", "/api/v1/topups", {"card_id": "K001", "amount": "1.005"})
    assert (bad.status_code, bad.get_json()["code"]) == (400, "bad_amount")


def test_settlement_over_http_with_statements_and_payout_files(api: Api, world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q1")
    world.sell("K001", 10_000)
    world.sell("K003", 4_000, canteen="C02")
    world.clock.set_ms(ms_from_china("2026-04-02T09:00"))
    refused = api("admin", "POST", "/api/v1/settlements/2026Q1", {})
    assert (refused.status_code, refused.get_json()["code"]) == (409, "terminals_behind")
    first = api("admin", "POST", "/api/v1/settlements/2026Q1", {"force": True})
    assert first.status_code == 201
    again = api("admin", "POST", "/api/v1/settlements/2026Q1", {"force": True})
    assert (again.status_code, again.get_json()) == (200, first.get_json())
    mine = api("operator", "GET", "/api/v1/settlements/2026Q1").get_json()
    assert [s["canteen_id"] for s in mine["statements"]] == ["C01"]  # not the self-operated C02
    assert mine["statements"][0]["net_fen"] == 9_950
    csv_resp = api("operator", "GET", "/api/v1/settlements/2026Q1/statements.csv")
    assert csv_resp.mimetype == "text/csv"
    text = csv_resp.get_data(as_text=True)
    assert text.startswith("\ufeff季度,类型,日期") and "C02" not in text
    payout = api("admin", "GET", "/api/v1/settlements/2026Q1/payouts.csv").get_data(as_text=True)
    assert OPERATOR in payout and SELF_OPERATOR in payout and "¥99.50" in payout
    assert api("operator", "GET", "/api/v1/settlements/2026Q1/payouts.csv").status_code == 403


def test_scores_come_from_the_canteens_own_unit(api: Api) -> None:
    ok = api("clerk_u01", "PUT", "/api/v1/canteens/C01/quality-scores/2026Q1", {"score": 85})
    assert (ok.status_code, ok.get_json()["pay_pct"]) == (200, 100)
    assert (
        api("admin", "PUT", "/api/v1/canteens/C01/quality-bands", {"bands": [[90, 100], [0, 97]]}).status_code
        == 200
    )
    rescored = api("clerk_u01", "PUT", "/api/v1/canteens/C01/quality-scores/2026Q1", {"score": 80})
    assert rescored.get_json()["pay_pct"] == 97
    other = api("clerk_u02", "PUT", "/api/v1/canteens/C01/quality-scores/2026Q1", {"score": 10})
    assert (other.status_code, other.get_json()["code"]) == (403, "forbidden")
    bad = api("clerk_u01", "PUT", "/api/v1/canteens/C01/quality-scores/2026Q1", {"score": 101})
    assert (bad.status_code, bad.get_json()["code"]) == (400, "invalid_input")


def test_a_diner_rates_their_own_sale_once_and_the_report_averages_it(api: Api, world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q1")
    world.sell("K001", 1_000)
    world.sell("K003", 1_000)
    sales = api("diner_h001", "GET", "/api/v1/holders/H001/sales").get_json()
    assert len(sales) == 1 and sales[0]["rated"] is False
    uuid = sales[0]["uuid"]
    r = api(
        "diner_h001",
        "POST",
        "/api/v1/ratings",
        {"sale_uuid": uuid, "service": 5, "food": 4, "comment": "好吃"},
    )
    assert r.status_code == 201
    twice = api("diner_h001", "POST", "/api/v1/ratings", {"sale_uuid": uuid, "service": 1, "food": 1})
    assert (twice.status_code, twice.get_json()["code"]) == (409, "already_rated")
    not_mine = api("diner_h002", "POST", "/api/v1/ratings", {"sale_uuid": uuid, "service": 1, "food": 1})
    assert (not_mine.status_code, not_mine.get_json()["code"]) == (403, "not_your_sale")
    assert api("diner_h002", "GET", "/api/v1/holders/H001/sales").status_code == 403
    other = world.conn.execute("SELECT uuid FROM sales WHERE holder_id = 'H003'").fetchone()[0]
    with write_txn(world.conn):
        quality.rate(world.conn, "H003", other, 4, 3, "", world.clock.now_ms())
    report = api("operator", "GET", "/api/v1/quality?quarter=2026Q1").get_json()
    c01 = report["canteens"][0]
    assert (c01["canteen_id"], c01["ratings"], c01["service_avg"], c01["food_avg"]) == (
        "C01",
        2,
        "4.50",
        "3.50",
    )
    assert [c["canteen_id"] for c in report["canteens"]] == ["C01"]


def test_daily_report_and_dining_matrix_show_who_ate_where(api: Api, world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q1")
    world.allocate("U02", "2026Q1")
    world.sell("K001", 1_200)  # U01 diner at U01's canteen
    world.sell("K002", 1_500, canteen="C01")  # U02 diner visiting U01's canteen
    world.sell("K002", 1_000, canteen="C02")
    daily = api("operator", "GET", "/api/v1/reports/daily?date=2026-01-06").get_json()
    assert [(c["canteen_id"], c["count"], c["amount_fen"]) for c in daily["canteens"]] == [("C01", 2, 2_700)]
    assert {u["unit_id"]: u["amount_fen"] for u in daily["units"]} == {"U01": 1_200, "U02": 1_500}
    matrix = api("auditor", "GET", "/api/v1/reports/dining-matrix?quarter=2026Q1").get_json()
    assert matrix["cross_unit"] == {"count": 1, "amount_fen": 1_500}
    assert matrix["totals"] == {"count": 3, "amount_fen": 3_700}
    assert api("operator", "GET", "/api/v1/reports/dining-matrix").status_code == 403
    quarterly = api("admin", "GET", "/api/v1/reports/quarterly?quarter=2026Q1").get_json()
    assert quarterly["totals"]["amount_fen"] == 3_700


def test_a_late_or_missing_allocation_is_flagged(api: Api, world: MoneyWorld) -> None:
    world.clock.set_ms(ms_from_china("2026-01-12T09:00"))
    world.allocate("U01", "2026Q1")  # two days late
    report = api("admin", "GET", "/api/v1/reports/allocations?quarter=2026Q1").get_json()
    assert {u["unit_id"]: u["status"] for u in report["units"]} == {"U01": "late", "U02": "missing"}
    assert report["flagged"] == ["U01", "U02"]
    assert [
        u["unit_id"]
        for u in api("clerk_u02", "GET", "/api/v1/reports/allocations?quarter=2026Q1").get_json()["units"]
    ] == ["U02"]
    ahead = api("admin", "GET", "/api/v1/reports/allocations?quarter=2026Q2").get_json()
    assert {u["status"] for u in ahead["units"]} == {"pending"}


def test_overdrafts_and_blocked_cards_are_reported(api: Api, world: MoneyWorld) -> None:
    world.topup("K001", 500)
    world.sell("K001", 1_200, offline=True)  # the terminal approved it offline; the purse had ¥5
    over = api("clerk_u01", "GET", "/api/v1/reports/overdrafts").get_json()
    assert [(h["holder_id"], h["self_fen"]) for h in over["holders"]] == [("H001", -700)]
    assert over["total_overdrawn_fen"] == 700
    assert api("clerk_u02", "GET", "/api/v1/reports/overdrafts").get_json()["holders"] == []
    blocked = api("admin", "GET", "/api/v1/reports/blocked-cards").get_json()["cards"]
    assert [(c["card_id"], c["reasons"]) for c in blocked] == [("K001", ["overdraft"])]


def test_year_end_clearing_over_http_follows_the_setting(api: Api, world: MoneyWorld, app) -> None:  # noqa: ANN001
    world.allocate("U02", "2026Q4")
    world.clock.set_ms(ms_from_china("2027-01-03T09:00"))
    app.config["YEAR_END_REFUND_TO"] = "city_finance"
    r = api("admin", "POST", "/api/v1/clearings/2026", {"force": True})
    assert r.status_code == 201 and r.get_json()["refund_to"] == "city_finance"
    mine = api("clerk_u02", "GET", "/api/v1/clearings/2026").get_json()
    assert [(u["unit_id"], u["refund_fen"]) for u in mine["units"]] == [("U02", 48_000)]
    assert api("clerk_u01", "GET", "/api/v1/clearings/2026").get_json()["units"] == []


def test_the_ledger_check_endpoint_reports_a_healthy_ledger(api: Api, world: MoneyWorld) -> None:
    world.allocate("U01", "2026Q1")
    world.sell("K001", 900)
    body = api("auditor", "GET", "/api/v1/ledger/check").get_json()
    assert body == {
        "ok": True,
        "ledger_sum_fen": 0,
        "violations": [],
        "quarantine": {"counts": {"pending": 0, "accepted": 0, "rejected": 0}, "pending": []},
    }
