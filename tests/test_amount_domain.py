"""One amount domain (issue 11, findings 2 and 3): no amount a clerk, an admin or a file
gives can put a balance out of the range terminals read, and top-ups and allocations have
ceilings. Each attack is replayed through the real API or CLI and shown refused with its
code and with nothing changed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from server.books import ledger
from server.cli.root import main
from server.infra.auth import create_token
from server.infra.db import open_db, write_txn
from server.registry import ceilings
from shared.amounts import FEN_MAX, FEN_MIN, check_fen
from shared.clock import FakeClock
from shared.errors import DomainError
from shared.money import parse_yuan
from shared.protocol.messages import decode_change
from tests.helpers import one_holder_books
from tests.money_world import MoneyWorld


def _state(conn: sqlite3.Connection) -> tuple[int, int, int, int]:
    """Everything an attack could have changed: txns, allocations, deltas, balance sum."""
    return (
        conn.execute("SELECT count(*) FROM txns").fetchone()[0],
        conn.execute("SELECT count(*) FROM allocations").fetchone()[0],
        conn.execute("SELECT count(*) FROM deltas").fetchone()[0],
        conn.execute("SELECT coalesce(sum(abs(balance_fen)), 0) FROM accounts").fetchone()[0],
    )


@pytest.fixture
def world(conn: sqlite3.Connection, clock: FakeClock) -> MoneyWorld:
    return MoneyWorld(conn, clock)


@pytest.fixture
def call(client, conn: sqlite3.Connection, clock: FakeClock, world: MoneyWorld):  # noqa: ANN001, ANN201
    with write_txn(conn):
        tokens = {
            "admin": create_token(conn, "admin", clock.now_ms()),
            "clerk": create_token(conn, "clerk", clock.now_ms(), unit_id="U01"),
        }

    def _call(who: str, url: str, body: dict):  # noqa: ANN202
        return client.post(url, json=body, headers={"Authorization": f"Bearer {tokens[who]}"})

    return _call


# -- finding 2: an amount no terminal can read ----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"unit_id": "U01", "quarter": "2026Q4", "per_person_fen": 9007199254740993},
        {"unit_id": "U01", "quarter": "2026Q4", "per_person_fen": 99999999999999999999},
        {"unit_id": "U01", "quarter": "2026Q4", "per_person": "90071992547409.93"},
    ],
)
def test_a_clerk_cannot_allocate_an_amount_terminals_cannot_read(
    call, conn: sqlite3.Connection, body: dict
) -> None:  # noqa: ANN001
    before = _state(conn)
    r = call("clerk", "/api/v1/allocations", body)
    assert (r.status_code, r.get_json()["code"]) == (400, "amount_out_of_range")
    assert _state(conn) == before


@pytest.mark.parametrize(
    "body",
    [{"card_id": "K001", "amount_fen": 99999999999999999999}, {"card_id": "K001", "amount": "9" * 5000}],
)
def test_an_admin_top_up_out_of_range_is_refused_not_a_500(
    call, conn: sqlite3.Connection, body: dict
) -> None:  # noqa: ANN001
    before = _state(conn)
    r = call("admin", "/api/v1/topups", body)
    assert (r.status_code, r.get_json()["code"]) == (400, "amount_out_of_range")
    assert _state(conn) == before


def test_top_ups_under_the_ceiling_cannot_carry_a_balance_out_of_range(
    call, conn: sqlite3.Connection, world: MoneyWorld
) -> None:  # noqa: ANN001
    with write_txn(conn):
        ceilings.set_value(conn, "max_topup_fen", FEN_MAX)
    ok = call("admin", "/api/v1/topups", {"card_id": "K001", "amount_fen": FEN_MAX})
    assert ok.status_code == 201
    before = _state(conn)
    r = call("admin", "/api/v1/topups", {"card_id": "K001", "amount_fen": 1})
    assert (r.status_code, r.get_json()["code"]) == (400, "amount_out_of_range")
    assert _state(conn) == before
    assert "2^53" in r.get_json()["detail"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "cli-home"  # apart from the conn fixture's database
    assert CliRunner().invoke(main, ["--home", str(home), "init"]).exit_code == 0
    one_holder_books(home / "server" / "canteen.sqlite", canteen=False)
    return home


def test_cli_top_up_of_ninety_quadrillion_yuan_is_refused_twice_without_a_traceback(home: Path) -> None:
    conn = open_db(home / "server" / "canteen.sqlite")
    before = _state(conn)
    for _ in range(2):
        result = CliRunner().invoke(main, ["--home", str(home), "topup", "K1", "90000000000000000"])
        assert result.exit_code == 2, result.output
        assert "amount_out_of_range" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _state(conn) == before


# -- finding 3: ceilings ----------------------------------------------------------------------


def test_a_clerk_allocation_above_the_ceiling_is_refused(call, conn: sqlite3.Connection) -> None:  # noqa: ANN001
    before = _state(conn)
    r = call(
        "clerk",
        "/api/v1/allocations",
        {"unit_id": "U01", "quarter": "2026Q4", "per_person_fen": 100000000000},
    )
    assert (r.status_code, r.get_json()["code"]) == (400, "amount_above_ceiling")
    assert "¥3000.00" in r.get_json()["detail"]
    assert _state(conn) == before
    at_ceiling = call(
        "clerk", "/api/v1/allocations", {"unit_id": "U01", "quarter": "2026Q4", "per_person": "3000"}
    )
    assert at_ceiling.status_code == 201


def test_a_top_up_above_the_ceiling_is_refused_and_the_ceiling_is_a_setting(
    call, conn: sqlite3.Connection, home: Path
) -> None:  # noqa: ANN001
    before = _state(conn)
    r = call("admin", "/api/v1/topups", {"card_id": "K001", "amount": "5000.01"})
    assert (r.status_code, r.get_json()["code"]) == (400, "amount_above_ceiling")
    assert _state(conn) == before
    assert call("admin", "/api/v1/topups", {"card_id": "K001", "amount": "5000"}).status_code == 201
    # over the CLI: the ceiling refuses, and an administrator can change it
    result = CliRunner().invoke(main, ["--home", str(home), "topup", "K1", "6000"])
    assert result.exit_code == 2 and "amount_above_ceiling" in result.output
    result = CliRunner().invoke(main, ["--home", str(home), "limits", "set", "max_topup_fen", "8000"])
    assert result.exit_code == 0 and "¥8000.00" in result.output
    assert CliRunner().invoke(main, ["--home", str(home), "topup", "K1", "6000"]).exit_code == 0


# -- the domain itself ------------------------------------------------------------------------


@given(
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([FEN_MIN - 1, FEN_MIN, FEN_MAX, FEN_MAX + 1])
)
def test_any_int_amount_is_refused_with_the_code_or_round_trips_through_the_wire(amount: int) -> None:
    try:
        fen = check_fen(amount)
    except DomainError as exc:
        assert exc.code == "amount_out_of_range"
        assert not FEN_MIN <= amount <= FEN_MAX
        return
    wire = {
        "kind": "holder",
        "holder_id": "H1",
        "unit_id": "U1",
        "subsidy_fen": fen,
        "self_fen": fen,
        "blocked": False,
    }
    decoded = decode_change(wire)
    assert (decoded.subsidy_fen, decoded.self_fen) == (amount, amount)


@given(st.integers(min_value=0, max_value=10**30), st.integers(min_value=0, max_value=99))
def test_any_typed_yuan_amount_is_refused_with_the_code_or_carried(yuan: int, fen: int) -> None:
    try:
        parsed = parse_yuan(f"{yuan}.{fen:02d}")
    except DomainError as exc:
        assert exc.code == "amount_out_of_range"
        assert yuan * 100 + fen > FEN_MAX
        return
    assert parsed == yuan * 100 + fen <= FEN_MAX


def test_the_ledger_refuses_a_move_that_carries_a_balance_out_of_range(conn: sqlite3.Connection) -> None:
    with write_txn(conn):
        ledger.post(conn, "x", [ledger.Move("a:1", "b:1", FEN_MAX)], 0)
    with pytest.raises(DomainError) as err, write_txn(conn):
        ledger.post(conn, "x", [ledger.Move("a:1", "b:1", 1)], 0)
    assert err.value.code == "amount_out_of_range"
    assert ledger.balances(conn, ["a:1", "b:1"]) == {"a:1": -FEN_MAX, "b:1": FEN_MAX}
    assert conn.execute("SELECT count(*) FROM txns").fetchone()[0] == 1
    # a balance recorded out of range before this rule may still move back towards the range
    with write_txn(conn):
        conn.execute("UPDATE accounts SET balance_fen = ? WHERE id = 'b:1'", (FEN_MAX + 10,))
        ledger.post(conn, "x", [ledger.Move("b:1", "a:1", 5)], 0)
    assert ledger.balance(conn, "b:1") == FEN_MAX + 5
