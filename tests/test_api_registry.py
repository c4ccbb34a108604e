"""The registry over HTTP: imports, cards, leavers, the directory — and who may touch what."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.infra.auth import create_token
from server.infra.db import write_txn
from tests.helpers import populated

FIXTURES = Path(__file__).parent / "fixtures" / "registry"


@pytest.fixture
def tok(conn: sqlite3.Connection, clock) -> dict[str, dict[str, str]]:  # noqa: ANN001
    """Authorization headers: admin, auditor, clerks of U01/U02, the two canteens' operators,
    diners H00001 (U01) and H00002 (U02)."""
    populated(conn, clock.now_ms())
    scopes = {
        "admin": ("admin", {}),
        "auditor": ("auditor", {}),
        "clerk1": ("clerk", {"unit_id": "U01"}),
        "clerk2": ("clerk", {"unit_id": "U02"}),
        "op1": ("operator", {"operator": "湘味餐饮有限公司"}),
        "op2": ("operator", {"operator": "市教育局机关服务中心"}),
        "diner1": ("diner", {"holder_id": "H00001"}),
        "diner2": ("diner", {"holder_id": "H00002"}),
    }
    with write_txn(conn):
        return {
            k: {"Authorization": f"Bearer {create_token(conn, role, clock.now_ms(), **kw)}"}
            for k, (role, kw) in scopes.items()
        }


def csv_post(client, url: str, name: str, headers: dict):  # noqa: ANN001, ANN201
    return client.post(
        url, data=(FIXTURES / name).read_bytes(), headers={**headers, "Content-Type": "text/csv"}
    )


# -- units ----------------------------------------------------------------------------------


def test_a_unit_is_created_with_its_standard_typed_in_yuan(client, tok) -> None:  # noqa: ANN001
    resp = client.post(
        "/api/v1/units", json={"name": "市人民医院", "quarterly_standard": "360.50"}, headers=tok["admin"]
    )
    assert resp.status_code == 201
    assert resp.get_json()["quarterly_standard_fen"] == 36_050
    unit_id = resp.get_json()["id"]
    patched = client.patch(
        f"/api/v1/units/{unit_id}", json={"quarterly_standard_fen": 40_000}, headers=tok["admin"]
    )
    assert patched.get_json()["quarterly_standard_fen"] == 40_000


def test_a_standard_with_more_than_two_decimals_is_refused(client, tok) -> None:  # noqa: ANN001
    resp = client.post(
        "/api/v1/units", json={"name": "市人民医院", "quarterly_standard": "360.505"}, headers=tok["admin"]
    )
    assert (resp.status_code, resp.get_json()["code"]) == (400, "bad_amount")


def test_a_clerk_lists_only_their_own_unit(client, tok) -> None:  # noqa: ANN001
    assert [u["id"] for u in client.get("/api/v1/units", headers=tok["clerk1"]).get_json()] == ["U01"]
    assert len(client.get("/api/v1/units", headers=tok["auditor"]).get_json()) == 3
    assert client.get("/api/v1/units/U02", headers=tok["clerk1"]).status_code == 403


# -- canteens, items, directory --------------------------------------------------------------


def test_the_seed_table_is_imported_over_http(client, tok) -> None:  # noqa: ANN001
    client.post("/api/v1/units", json={"id": "U04", "name": "市人民医院"}, headers=tok["admin"])
    resp = csv_post(client, "/api/v1/canteens/import", "canteens_seed_bom.csv", tok["admin"])
    assert resp.status_code == 200, resp.get_json()
    assert len(resp.get_json()["created"]) == 4


def test_an_import_with_errors_answers_every_line_and_imports_nothing(client, tok) -> None:  # noqa: ANN001
    resp = csv_post(client, "/api/v1/canteens/import", "canteens_errors.csv", tok["admin"])
    body = resp.get_json()
    assert (resp.status_code, body["code"]) == (422, "import_rejected")
    assert sorted({e["line"] for e in body["errors"]}) == [2, 3, 4, 5, 6]
    assert all({"line", "column", "code", "detail", "message"} <= set(e) for e in body["errors"])
    names = {c["name"] for c in client.get("/api/v1/canteens", headers=tok["admin"]).get_json()}
    assert names == {"财政局食堂", "教育局食堂"}


def test_an_item_priced_above_its_reference_price_is_refused_over_http(client, tok) -> None:  # noqa: ANN001
    resp = client.put(
        "/api/v1/canteens/C01/items/cola",
        json={"name": "可乐", "price": "3.50", "reference_price": "3.00"},
        headers=tok["admin"],
    )
    assert (resp.status_code, resp.get_json()["code"]) == (400, "price_above_reference")
    ok = client.put(
        "/api/v1/canteens/C01/items/cola",
        json={"name": "可乐", "price": "3.00", "reference_price_fen": 300},
        headers=tok["admin"],
    )
    assert ok.get_json() == {"name": "可乐", "price_fen": 300, "reference_price_fen": 300}


def test_an_operator_sees_only_the_canteens_they_run(client, tok) -> None:  # noqa: ANN001
    assert [c["id"] for c in client.get("/api/v1/canteens", headers=tok["op1"]).get_json()] == ["C01"]
    assert client.get("/api/v1/canteens/C01", headers=tok["op1"]).status_code == 200
    assert client.get("/api/v1/canteens/C02", headers=tok["op1"]).get_json()["code"] == "forbidden"
    assert [c["id"] for c in client.get("/api/v1/canteens", headers=tok["clerk2"]).get_json()] == ["C02"]


def test_the_directory_is_public(client, tok) -> None:  # noqa: ANN001
    resp = client.get("/api/v1/directory")
    assert resp.status_code == 200
    entry = next(e for e in resp.get_json() if e["canteen_id"] == "C01")
    assert entry["unit"] == "市财政局" and entry["meals"][1]["price"] == "¥12.00"
    assert "config" not in entry and "operator" not in entry


# -- staff, cards, leavers -------------------------------------------------------------------


def test_a_clerk_imports_their_roster_but_not_another_units(client, tok) -> None:  # noqa: ANN001
    text = "单位名称,姓名,工号,卡号\n市财政局,新人,CZ-NEW,04NEW0001\n"
    ok = client.post(
        "/api/v1/roster/import", data=text.encode(), headers={**tok["clerk1"], "Content-Type": "text/csv"}
    )
    assert ok.status_code == 200 and ok.get_json()["new_holders"] == 1
    bad = client.post(
        "/api/v1/roster/import",
        data=text.replace("CZ-NEW", "CZ-2").replace("0001", "0002").encode(),
        headers={**tok["clerk2"], "Content-Type": "text/csv"},
    )
    assert bad.status_code == 422
    assert [(e["line"], e["code"]) for e in bad.get_json()["errors"]] == [(2, "forbidden")]


def test_a_roster_can_be_uploaded_as_a_form_file(client, tok) -> None:  # noqa: ANN001
    from io import BytesIO

    data = {
        "file": (BytesIO("单位名称,姓名,工号,卡号\n市财政局,新人,CZ-NEW,04NEW0001\n".encode()), "roster.csv")
    }
    resp = client.post(
        "/api/v1/roster/import", data=data, headers=tok["admin"], content_type="multipart/form-data"
    )
    assert resp.status_code == 200 and resp.get_json()["new_holders"] == 1


def test_a_clerk_cannot_touch_another_units_staff_or_cards(client, tok) -> None:  # noqa: ANN001
    h = tok["clerk1"]
    assert client.get("/api/v1/units/U02/holders", headers=h).status_code == 403
    assert client.get("/api/v1/holders/H00002", headers=h).status_code == 403
    assert client.post("/api/v1/holders/H00002/leave", headers=h).status_code == 403
    assert client.post("/api/v1/cards/C00002/lost", headers=h).status_code == 403
    assert (
        client.post(
            "/api/v1/units/U02/holders", json={"name": "x", "staff_no": "1", "card_id": "X1"}, headers=h
        ).status_code
        == 403
    )
    assert client.get("/api/v1/cards/C00002", headers=tok["admin"]).get_json()["status"] == "active"
    assert client.get("/api/v1/holders/H00002", headers=tok["admin"]).get_json()["status"] == "active"


def test_a_diner_sees_and_blocks_only_their_own_card(client, tok) -> None:  # noqa: ANN001
    me = client.get("/api/v1/holders/H00001", headers=tok["diner1"]).get_json()
    assert me["unit_id"] == "U01" and me["subsidy_fen"] == 30_000
    assert client.get("/api/v1/holders/H00002", headers=tok["diner1"]).status_code == 403
    assert client.post("/api/v1/cards/C00002/lost", headers=tok["diner1"]).status_code == 403
    lost = client.post("/api/v1/cards/C00001/lost", headers=tok["diner1"])
    assert lost.get_json()["status"] == "lost"
    assert client.get("/api/v1/me", headers=tok["diner1"]).get_json() == {
        "role": "diner",
        "unit_id": None,
        "operator": None,
        "holder_id": "H00001",
    }


def test_lost_then_replaced_card_over_http_keeps_the_purses(client, tok) -> None:  # noqa: ANN001
    before = client.get("/api/v1/holders/H00001", headers=tok["clerk1"]).get_json()
    client.post("/api/v1/cards/C00001/lost", headers=tok["clerk1"])
    resp = client.post(
        "/api/v1/cards/C00001/replace", json={"new_card_id": "04REPL01"}, headers=tok["clerk1"]
    )
    assert resp.status_code == 201
    after = client.get("/api/v1/holders/H00001", headers=tok["clerk1"]).get_json()
    assert (after["subsidy_fen"], after["self_fen"]) == (before["subsidy_fen"], before["self_fen"])
    assert {c["card_id"]: c["status"] for c in after["cards"]} == {"C00001": "lost", "04REPL01": "active"}


def test_a_leaver_refund_over_http_needs_an_admin(client, tok, conn, clock) -> None:  # noqa: ANN001
    from server.registry import funds

    with write_txn(conn):
        funds.topup(conn, "C00001", 2_000, clock.now_ms(), ref="api-test")
    client.post("/api/v1/holders/H00001/leave", headers=tok["clerk1"])
    holder = client.get("/api/v1/holders/H00001", headers=tok["clerk1"]).get_json()
    assert holder["status"] == "left" and holder["subsidy_fen"] == 0 and holder["self_fen"] >= 2_000
    req = client.post(
        "/api/v1/holders/H00001/refunds", json={"bank_account": "6217003320001234567"}, headers=tok["diner1"]
    )
    assert req.status_code == 201, req.get_json()
    rid = req.get_json()["id"]
    assert client.post(f"/api/v1/refunds/{rid}/approve", headers=tok["clerk1"]).status_code == 403
    assert [r["id"] for r in client.get("/api/v1/refunds", headers=tok["clerk2"]).get_json()] == []
    assert [r["id"] for r in client.get("/api/v1/refunds", headers=tok["clerk1"]).get_json()] == [rid]
    # the diner registered the account with the request: two administrators approve
    first = client.post(f"/api/v1/refunds/{rid}/approve", headers=tok["admin"]).get_json()
    assert first["status"] == "pending" and first["first_approved_by"].startswith("admin#")
    with write_txn(conn):
        second_admin = {"Authorization": f"Bearer {create_token(conn, 'admin', clock.now_ms())}"}
    done = client.post(f"/api/v1/refunds/{rid}/approve", headers=second_admin).get_json()
    assert (
        done["status"] == "approved"
        and done["amount_fen"] == holder["self_fen"]
        and done["decided_by"].startswith("admin#")
    )
    assert client.get("/api/v1/holders/H00001", headers=tok["admin"]).get_json()["self_fen"] == 0


def test_tokens_are_issued_by_an_admin_for_a_scope(client, tok) -> None:  # noqa: ANN001
    resp = client.post("/api/v1/tokens", json={"role": "diner", "holder_id": "H00003"}, headers=tok["admin"])
    assert resp.status_code == 201
    who = client.get("/api/v1/me", headers={"Authorization": f"Bearer {resp.get_json()['token']}"}).get_json()
    assert who["holder_id"] == "H00003"
    missing = client.post("/api/v1/tokens", json={"role": "clerk"}, headers=tok["admin"])
    assert missing.get_json()["code"] == "invalid_input"
