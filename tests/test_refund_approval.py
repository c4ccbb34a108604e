"""A clerk cannot redirect a leaver's refund (issue 11, finding 4): every bank account change
is logged with who and when, and a refund to an account changed within
``refund_second_approval_days`` needs two different administrators, who see the history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.books import ledger
from server.cli.root import main
from server.infra.auth import create_token
from server.infra.db import open_db, write_txn
from server.registry import ceilings, funds, leavers
from shared.clock import FakeClock, ms_from_china
from tests.helpers import BOOKS_AT, one_holder_books, populated

ATTACKER_ACCOUNT = "6222020200112233445"


def _paid(conn: sqlite3.Connection) -> tuple[int, int]:
    return (
        conn.execute("SELECT count(*) FROM txns WHERE kind = 'self_refund'").fetchone()[0],
        ledger.balance(conn, ledger.SELF_REFUND_BANK),
    )


@pytest.fixture
def auth(conn: sqlite3.Connection, clock: FakeClock) -> dict[str, dict[str, str]]:
    populated(conn, clock.now_ms())
    with write_txn(conn):
        funds.topup(conn, "C00001", 2_000, clock.now_ms(), ref="bank-1")
        tokens = {
            "clerk": create_token(conn, "clerk", clock.now_ms(), unit_id="U01", label="王科员"),
            "admin1": create_token(conn, "admin", clock.now_ms(), label="李处长"),
            "admin2": create_token(conn, "admin", clock.now_ms(), label="赵科长"),
        }
    return {k: {"Authorization": f"Bearer {v}"} for k, v in tokens.items()}


def test_a_clerk_redirected_refund_is_not_paid_on_one_admins_approval(client, conn, auth) -> None:  # noqa: ANN001
    # the attack: change the account, record the leave, ask for the refund — all as the clerk
    r = client.patch("/api/v1/holders/H00001", json={"bank_account": ATTACKER_ACCOUNT}, headers=auth["clerk"])
    assert r.status_code == 200
    [change] = r.get_json()["bank_account_changes"]
    assert change["changed_by"].startswith("clerk:U01[王科员]#") and change["new_masked"] == "6222 **** 3445"
    assert client.post("/api/v1/holders/H00001/leave", headers=auth["clerk"]).status_code == 200
    req = client.post("/api/v1/holders/H00001/refunds", json={}, headers=auth["clerk"]).get_json()
    assert req["second_approval_needed"] is True
    paid_before = _paid(conn)

    # the admin sees who changed the account, and one approval pays nothing
    [listed] = client.get("/api/v1/refunds?status=pending", headers=auth["admin1"]).get_json()
    assert listed["account_changes"] == [change] and listed["second_approval_needed"] is True
    first = client.post(f"/api/v1/refunds/{req['id']}/approve", headers=auth["admin1"])
    assert first.status_code == 200 and first.get_json()["status"] == "pending"
    assert _paid(conn) == paid_before
    again = client.post(f"/api/v1/refunds/{req['id']}/approve", headers=auth["admin1"])
    assert (again.status_code, again.get_json()["code"]) == (409, "second_approval_needed")
    assert _paid(conn) == paid_before
    # a second administrator — who may instead reject it after checking with the person
    done = client.post(f"/api/v1/refunds/{req['id']}/approve", headers=auth["admin2"]).get_json()
    assert done["status"] == "approved" and done["decided_by"].startswith("admin[赵科长]#")
    assert _paid(conn)[0] == paid_before[0] + 1


def test_an_admin_who_changed_the_account_cannot_approve_its_refund(client, conn, auth) -> None:  # noqa: ANN001
    client.patch("/api/v1/holders/H00001", json={"bank_account": ATTACKER_ACCOUNT}, headers=auth["admin1"])
    client.post("/api/v1/holders/H00001/leave", headers=auth["admin1"])
    req = client.post("/api/v1/holders/H00001/refunds", json={}, headers=auth["clerk"]).get_json()
    r = client.post(f"/api/v1/refunds/{req['id']}/approve", headers=auth["admin1"])
    assert (r.status_code, r.get_json()["code"]) == (409, "second_approval_needed")
    assert client.get("/api/v1/refunds", headers=auth["admin2"]).get_json()[0]["first_approved_by"] is None


def test_an_account_changed_before_the_window_needs_one_approval(client, conn, clock, auth) -> None:  # noqa: ANN001
    client.patch(
        "/api/v1/holders/H00001", json={"bank_account": "6217003320001234567"}, headers=auth["clerk"]
    )
    with write_txn(conn):
        ceilings.set_value(conn, "refund_second_approval_days", 30)
    clock.advance_ms(31 * 86_400_000)
    client.post("/api/v1/holders/H00001/leave", headers=auth["clerk"])
    req = client.post("/api/v1/holders/H00001/refunds", json={}, headers=auth["clerk"]).get_json()
    assert req["second_approval_needed"] is False and len(req["account_changes"]) == 1
    done = client.post(f"/api/v1/refunds/{req['id']}/approve", headers=auth["admin1"]).get_json()
    assert done["status"] == "approved"


def test_a_roster_import_that_changes_an_account_is_logged(client, conn, auth) -> None:  # noqa: ANN001
    row = conn.execute("SELECT unit_id, name, staff_no FROM holders WHERE id = 'H00001'").fetchone()
    unit = conn.execute("SELECT name FROM units WHERE id = ?", (row["unit_id"],)).fetchone()[0]
    card = conn.execute(
        "SELECT card_id FROM cards WHERE holder_id = 'H00001' AND status = 'active'"
    ).fetchone()[0]
    csv = (
        "单位名称,姓名,工号,卡号,银行卡号\n"
        + f"{unit},{row['name']},{row['staff_no']},{card},{ATTACKER_ACCOUNT}\n"
    )
    r = client.post("/api/v1/roster/import", data=csv.encode(), headers=auth["clerk"])
    assert r.status_code == 200, r.get_json()
    holder = client.get("/api/v1/holders/H00001", headers=auth["admin1"]).get_json()
    assert [(c["changed_by"][:9], c["new_masked"]) for c in holder["bank_account_changes"]] == [
        ("clerk:U01", "6222 **** 3445")
    ]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "cli-home"
    assert CliRunner().invoke(main, ["--home", str(home), "init"]).exit_code == 0
    one_holder_books(home / "server" / "canteen.sqlite", canteen=False)
    conn = open_db(home / "server" / "canteen.sqlite")
    with write_txn(conn):
        funds.topup(conn, "K1", 5_000, ms_from_china(BOOKS_AT))
    conn.close()
    return home


def test_cli_holder_show_lists_the_changes_and_one_login_cannot_approve_twice(home: Path) -> None:
    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["--home", str(home), *args])
        return result.exit_code, result.output

    assert run("holder", "set-bank", "H1", "6217003320001234567")[0] == 0
    assert run("holder", "set-bank", "H1", ATTACKER_ACCOUNT)[0] == 0
    code, out = run("holder", "show", "H1")
    assert code == 0 and "银行账户变更" in out
    assert "6217 **** 4567 → 6222 **** 3445" in out and "（无 none） → 6217 **** 4567" in out
    assert run("holder", "leave", "H1")[0] == 0
    code, out = run("refund", "request", "H1")
    assert code == 0 and "需两位管理员审批" in out
    code, out = run("refund", "approve", "1")  # the same console login requested it
    assert code == 2 and "second_approval_needed" in out
    conn = open_db(home / "server" / "canteen.sqlite")
    assert _paid(conn) == (0, 0)
    assert leavers.get_request(conn, 1)["first_approved_by"] is None
    conn.close()
