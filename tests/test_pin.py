"""The payment PIN above the no-PIN limit (小额免密, issue 12).

Up to ``max_sale_fen`` a card pays without a PIN; above it the terminal asks for the
cardholder's PIN and the server checks it online, giving an approval for that card,
terminal and amount that one sale may use. Offline such a sale is declined.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from server.cli.root import main
from server.infra.auth import create_token, terminal_request_signature
from server.infra.db import open_db, write_txn
from server.registry import pins
from server.registry.terminals import TerminalCredentials
from shared.clock import DAY_MS, FakeClock, ms_from_china
from shared.errors import DomainError
from shared.risk_limits import RiskLimits
from simulator.harness.cluster import Cluster
from simulator.harness.driver import Harness
from simulator.harness.world import demo_world
from terminal.authorize import CardState, LinkState, PinApproval, TapRequest, authorize
from terminal.devices import Order
from terminal.rules import CanteenRules
from tests.helpers import populated, terminal
from tests.test_quarantine import City

NOON = ms_from_china("2026-11-26T15:00")
RULES = CanteenRules.from_config("C01", {"unit_id": "U01", "allow_typed_amount": True})
LIMITS = RiskLimits()  # ¥100 without a PIN
ONLINE = LinkState(online=True, last_sync_ms=NOON)
OFFLINE = LinkState(online=False, offline_since_ms=NOON - 60_000, last_sync_ms=NOON - 60_000)
CARD = CardState("K1", "active", "H1", "U01", 32_000, 0, False, 1, 0, 0)


def _buy(amount: int, link: LinkState = ONLINE, approval: PinApproval | None = None) -> str | None:
    request = TapRequest("K1", kind="shop", amount_fen=amount, pin_approval=approval)
    d = authorize(request, CARD, RULES, LIMITS, link, NOON)
    return None if d.approved else d.reason


# --- the pure rules ------------------------------------------------------------------------


def test_above_the_limit_a_pin_is_asked_online_and_the_sale_declined_offline() -> None:
    assert _buy(10_000) is None  # at the limit: no PIN
    assert _buy(28_000) == "pin_required"
    assert _buy(28_000, OFFLINE) == "pin_offline"
    assert _buy(28_000, OFFLINE, PinApproval("a1", "K1", 28_000)) == "pin_offline"
    assert _buy(28_000, approval=PinApproval("a1", "K1", 28_000)) is None
    assert _buy(28_000, approval=PinApproval("a1", "K1", 27_000)) == "pin_required"  # another amount
    assert _buy(28_000, approval=PinApproval("a1", "K2", 28_000)) == "pin_required"  # another card
    assert _buy(40_000, approval=PinApproval("a1", "K1", 40_000)) == "insufficient_balance"


def test_five_wrong_tries_lock_until_the_next_china_midnight() -> None:
    now = ms_from_china("2026-11-26T23:59")
    failed, locked = 0, None
    for n in range(1, 5):
        failed, locked = pins.after_failure(failed, locked, now)
        assert (failed, locked) == (n, None)
    failed, locked = pins.after_failure(failed, locked, now)
    assert locked == ms_from_china("2026-11-27T00:00")
    assert pins.is_locked(locked, locked - 1) and not pins.is_locked(locked, locked)
    assert pins.after_failure(failed, locked, locked + 5) == (1, None)  # a new day starts again


@pytest.mark.parametrize(
    "pin", ["12345", "1234567", "12a456", "１２３４５６", 135790, "111111", "123456", "987654"]
)
def test_a_pin_is_six_digits_and_not_trivial(pin: object) -> None:
    with pytest.raises(DomainError) as err:
        pins.check_pin_format(pin)
    assert err.value.code in ("pin_invalid", "pin_too_simple")


# --- storage and lockout -------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    conn = open_db(tmp_path / "s.db")
    populated(conn, NOON)
    return conn


def _holder(conn: sqlite3.Connection) -> str:
    return str(conn.execute("SELECT id FROM holders ORDER BY id LIMIT 1").fetchone()[0])


def test_the_stored_hash_never_holds_the_pin_and_salts_differ(db: sqlite3.Connection) -> None:
    h = _holder(db)
    with write_txn(db):
        pins.set_pin(db, h, "135790", NOON, "test")
    first = db.execute("SELECT * FROM holder_pins WHERE holder_id = ?", (h,)).fetchone()
    assert "135790" not in json.dumps(list(first), default=str)
    assert first["params"].startswith("scrypt:")
    with write_txn(db):
        pins.set_pin(db, h, "135790", NOON, "test")
    again = db.execute("SELECT hash_hex, salt_hex FROM holder_pins WHERE holder_id = ?", (h,)).fetchone()
    assert again["salt_hex"] != first["salt_hex"] and again["hash_hex"] != first["hash_hex"]


def test_five_wrong_pins_lock_even_the_right_one_until_the_next_day(db: sqlite3.Connection) -> None:
    h = _holder(db)
    with write_txn(db):
        pins.set_pin(db, h, "135790", NOON, "test")
        assert pins.verify(db, h, "000001", NOON).tries_left == 4
        assert pins.verify(db, h, "135790", NOON).result == "ok"  # a right PIN clears the count
        results = [pins.verify(db, h, "000001", NOON) for _ in range(5)]
        assert [r.result for r in results] == ["wrong"] * 4 + ["locked"]
        assert pins.verify(db, h, "135790", NOON).result == "locked"
        tomorrow = NOON + DAY_MS
        assert pins.verify(db, h, "135790", tomorrow).result == "ok"


# --- the server's sale checks: an approval used once, for its card, terminal and amount ----


def _approve(city: City, card: str, amount: int, terminal_id: str | None = None) -> str:
    holder = city.conn.execute("SELECT holder_id FROM cards WHERE card_id = ?", (card,)).fetchone()[0]
    with write_txn(city.conn):
        a = pins.issue_approval(
            city.conn, holder, card, terminal_id or city.creds.terminal_id, amount, city.clock.now_ms()
        )
    return a.approval_id


def test_an_approved_sale_above_the_limit_is_applied_once(tmp_path: Path) -> None:
    city = City(tmp_path / "s.db")
    card = city.staff()
    approval = _approve(city, card, 28_000)
    [ok] = city.send(city.new_sale(card, 28_000, pin_approval=approval))
    assert ok.status == "applied"
    [reused] = city.send(city.new_sale(card, 28_000, pin_approval=approval))
    assert (reused.status, reused.reason) == ("quarantined", "sale_pin_invalid")


def test_a_forged_or_mismatched_approval_is_quarantined(tmp_path: Path) -> None:
    city = City(tmp_path / "s.db")
    card, other = city.staff(), city.visitor()
    cases = [
        city.new_sale(card, 28_000, pin_approval=secrets.token_hex(16)),  # never issued
        city.new_sale(card, 29_000, pin_approval=_approve(city, card, 28_000)),  # another amount
        city.new_sale(other, 28_000, pin_approval=_approve(city, card, 28_000)),  # another card
        city.new_sale(card, 28_000, pin_approval=_approve(city, card, 28_000, "T9999")),  # another terminal
        city.new_sale(card, 28_000),  # none at all
    ]
    before = city.balances()
    results = city.send(*cases)
    assert [(r.status, r.reason) for r in results] == [("quarantined", "sale_pin_invalid")] * 4 + [
        ("quarantined", "sale_over_limit")
    ]
    assert city.balances() == before


def test_a_sale_made_after_the_approval_expired_is_quarantined(tmp_path: Path) -> None:
    city = City(tmp_path / "s.db")
    card = city.staff()
    approval = _approve(city, card, 28_000)
    late = city.clock.now_ms() + pins.APPROVAL_TTL_MS + 10 * 60_000
    city.clock.set_ms(late)
    [r] = city.send(city.new_sale(card, 28_000, pin_approval=approval, at_ms=late))
    assert (r.status, r.reason) == ("quarantined", "sale_pin_invalid")


# --- the API: a diner sets their own PIN; the terminal's online check ------------------------


def _tokens(conn: sqlite3.Connection, clock: FakeClock) -> tuple[str, dict[str, str]]:
    h = _holder(conn)
    unit = conn.execute("SELECT unit_id FROM holders WHERE id = ?", (h,)).fetchone()[0]
    other = conn.execute("SELECT id FROM units WHERE id != ? LIMIT 1", (unit,)).fetchone()[0]
    with write_txn(conn):
        tokens = {
            "diner": create_token(conn, "diner", clock.now_ms(), holder_id=h),
            "clerk": create_token(conn, "clerk", clock.now_ms(), unit_id=unit),
            "other_clerk": create_token(conn, "clerk", clock.now_ms(), unit_id=other),
        }
    return h, {k: f"Bearer {v}" for k, v in tokens.items()}


def test_a_diner_sets_their_own_pin_and_a_clerk_of_their_unit_resets_it(client, conn, clock) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    h, auth = _tokens(conn, clock)

    def put(who: str, body: dict) -> Any:
        return client.put(f"/api/v1/holders/{h}/pin", json=body, headers={"Authorization": auth[who]})

    r = put("diner", {"pin": "135790"})
    assert r.status_code == 200 and r.get_json() == {"holder_id": h, "pin_set": True}
    assert "135790" not in r.get_data(as_text=True)
    assert put("diner", {"pin": "246802"}).get_json()["code"] == "pin_wrong"  # the old one is needed
    assert put("diner", {"pin": "246802", "old_pin": "135790"}).status_code == 200
    assert put("diner", {"pin": "111111"}).get_json()["code"] in ("pin_too_simple", "pin_wrong")
    assert put("other_clerk", {"pin": "357913"}).status_code == 403
    assert put("clerk", {"pin": "357913"}).status_code == 200
    with write_txn(conn):
        assert pins.verify(conn, h, "357913", clock.now_ms()).result == "ok"
    bad = put("clerk", {"pin": "12345"})
    assert bad.status_code == 400 and bad.get_json()["code"] == "pin_invalid"


def _signed(creds: TerminalCredentials, clock: FakeClock, body: bytes, query: str | None = None) -> dict:
    path = f"/api/v1/terminals/{creds.terminal_id}/pin-check"
    query = query if query is not None else f"body={hashlib.sha256(body).hexdigest()}"
    nonce = secrets.token_hex(16)
    sig = terminal_request_signature(
        bytes.fromhex(creds.secret_hex), creds.terminal_id, clock.now_ms(), nonce, "POST", path, query
    )
    headers = {
        "X-Terminal-Id": creds.terminal_id,
        "X-Terminal-Time": str(clock.now_ms()),
        "X-Terminal-Nonce": nonce,
        "X-Terminal-Sig": sig,
        "Content-Type": "application/json",
    }
    return {"path": f"{path}?{query}", "data": body, "headers": headers}


def test_the_terminal_checks_a_pin_online_and_gets_a_one_sale_approval(client, conn, clock) -> None:  # noqa: ANN001
    world = demo_world(conn, clock.now_ms(), diners=4)
    creds = terminal(conn, "C01", clock.now_ms())
    diner = world.diners[0]
    with write_txn(conn):
        pins.set_pin(conn, diner.holder_id, "135790", clock.now_ms(), "test")

    def check(pin: str, amount: int = 28_000, card: str = diner.card_id) -> dict:
        body = json.dumps({"card_id": card, "pin": pin, "amount_fen": amount}).encode()
        return client.post(**_signed(creds, clock, body)).get_json()

    ok = check("135790")
    assert ok["result"] == "ok"
    stored = pins.get_approval(conn, ok["approval_id"])
    assert stored is not None
    assert (stored.card_id, stored.terminal_id, stored.amount_fen) == (
        diner.card_id,
        creds.terminal_id,
        28_000,
    )
    assert check("000001") == {"result": "wrong", "tries_left": 4}
    assert [check("000001")["result"] for _ in range(4)] == ["wrong"] * 3 + ["locked"]
    assert check("135790")["result"] == "locked"
    assert check("135790", card=world.diners[1].card_id)["result"] == "not_set"
    assert check("135790", card="NOSUCHCARD")["result"] == "card_unknown"
    # the body is bound to the signature: a changed amount under the same signed hash is refused
    body = json.dumps({"card_id": diner.card_id, "pin": "135790", "amount_fen": 1}).encode()
    signed = _signed(creds, clock, body, query=f"body={hashlib.sha256(b'other').hexdigest()}")
    r = client.post(**signed)
    assert r.status_code == 401 and r.get_json()["code"] == "bad_signature"


# --- the clerk's CLI ---------------------------------------------------------------------------


def test_the_clerk_sets_a_pin_at_a_hidden_prompt(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    init = runner.invoke(main, ["--home", str(home), "init", "--json"])
    assert init.exit_code == 0, init.output
    conn = open_db(json.loads(init.stdout)["database"])
    populated(conn, NOON)
    h = _holder(conn)
    conn.close()
    r = runner.invoke(main, ["--home", str(home), "holder", "pin-set", h], input="135790\n135790\n")
    assert r.exit_code == 0, r.output
    assert "135790" not in r.output and "支付密码已设置" in r.stdout
    mismatch = runner.invoke(main, ["--home", str(home), "holder", "pin-set", h], input="135790\n246802\n")
    assert mismatch.exit_code != 0
    simple = runner.invoke(main, ["--home", str(home), "holder", "pin-set", h], input="123456\n123456\n")
    assert simple.exit_code == 2 and "pin_too_simple" in simple.stderr and "\n错误：" in simple.stderr


# --- through a real server and a real terminal with the simulated keypad -------------------------


def test_a_till_pays_above_the_limit_with_the_pin_and_never_keeps_it(broker, tmp_path: Path) -> None:  # noqa: ANN001
    clock = FakeClock(NOON)
    with Cluster(tmp_path, broker=broker, clock=clock, terminal_prefix=tmp_path.name[-12:]) as cluster:
        conn = cluster.db()
        world = demo_world(conn, clock.now_ms(), diners=4)
        diner = next(d for d in world.diners if d.unit_id == "U01")
        with write_txn(conn):
            pins.set_pin(conn, diner.holder_id, "135790", clock.now_ms(), "test")
        h = Harness(cluster)
        try:
            till = h.add_till("C01", "C01")
            h.settle_down()
            order = Order("shop", (), 12_000)
            wrong = till.present_card(diner.card_id, order, pin="000001")
            assert wrong["event"] == "declined" and wrong["reason"] == "pin_wrong"
            screens = [line for screen in till.handle.terminal.display.screens for line in screen.lines]
            assert "还可尝试4次" in screens and "******" in screens
            assert not any("000001" in line or "135790" in line for line in screens)
            paid = till.present_card(diner.card_id, order, pin="135790")
            assert paid["event"] == "approved" and paid["offline"] is False
            h.settle_down()
            row = conn.execute(
                "SELECT status FROM sales WHERE terminal_id = ? AND seq = ?", (till.id, paid["seq"])
            ).fetchone()
            assert row[0] == "applied"
            terminal_db = Path(till.handle.config.db_path)
            for f in terminal_db.parent.glob(terminal_db.name + "*"):
                assert b"135790" not in f.read_bytes()
            h.cut(till)
            offline = till.present_card(diner.card_id, order, pin="135790")
            assert offline["event"] == "declined" and offline["reason"] == "pin_offline"
            h.heal(till)
        finally:
            h.close()
            conn.close()
