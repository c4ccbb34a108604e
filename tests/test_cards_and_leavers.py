"""Lost cards, replacements, and staff who leave: the money follows the rules."""

from __future__ import annotations

import sqlite3

import pytest

from server.books import ledger
from server.closing.check import all_violations
from server.downstream.deltas import current_version, deltas_since
from server.downstream.snapshot import build_snapshot
from server.infra.db import write_txn
from server.registry import cards, funds, leavers
from server.registry.holders import holder_change
from server.registry.terminals import record_status
from shared.errors import DomainError
from shared.protocol import Status
from tests.helpers import populated, terminal


@pytest.fixture
def world(conn: sqlite3.Connection, clock) -> sqlite3.Connection:  # noqa: ANN001
    """The demo city; H00001 (unit U01, card C00001) then holds ¥300.00 subsidy and SELF_FEN."""
    populated(conn, clock.now_ms())
    with write_txn(conn):
        funds.topup(conn, "C00001", SELF_FEN - purses(conn, "H00001")[1], clock.now_ms(), ref="t-1")
    return conn


SELF_FEN = 50_000


def purses(conn: sqlite3.Connection, holder_id: str) -> tuple[int, int]:
    change = holder_change(conn, holder_id, 1_767_672_000_000)  # 2026-01-06
    return change["subsidy_fen"], change["self_fen"]


def test_a_lost_card_is_blocked_at_once_on_every_terminal(world, clock) -> None:  # noqa: ANN001
    v = current_version(world)
    with write_txn(world):
        cards.report_lost(world, "C00001", clock.now_ms())
    [delta] = deltas_since(world, v)
    assert delta.version == v + 1
    assert list(delta.changes) == [
        {"kind": "card", "card_id": "C00001", "holder_id": "H00001", "status": "lost"}
    ]
    snap = {c["card_id"]: c["status"] for c in build_snapshot(world).changes if c["kind"] == "card"}
    assert snap["C00001"] == "lost"


def test_reporting_a_lost_card_twice_changes_nothing(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        cards.report_lost(world, "C00001", clock.now_ms())
    v = current_version(world)
    with write_txn(world):
        assert cards.report_lost(world, "C00001", clock.now_ms())["status"] == "lost"
    assert current_version(world) == v


def test_a_replacement_card_keeps_both_purses(world, clock) -> None:  # noqa: ANN001
    before = purses(world, "H00001")
    assert before == (30_000, SELF_FEN)
    with write_txn(world):
        cards.report_lost(world, "C00001", clock.now_ms())
        new = cards.replace(world, "C00001", "NEW0001", clock.now_ms())
    assert new == {
        "card_id": "NEW0001",
        "holder_id": "H00001",
        "status": "active",
        "changed_at_ms": clock.now_ms(),
        "replaced_by": None,
    }
    assert purses(world, "H00001") == before
    old = cards.get(world, "C00001")
    assert (old["status"], old["replaced_by"]) == ("lost", "NEW0001")


def test_a_replaced_card_cannot_be_found_again_or_replaced_twice(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        cards.report_lost(world, "C00001", clock.now_ms())
        cards.replace(world, "C00001", "NEW0001", clock.now_ms())
    for op in (
        lambda: cards.report_found(world, "C00001", clock.now_ms()),
        lambda: cards.replace(world, "C00001", "NEW0002", clock.now_ms()),
    ):
        with pytest.raises(DomainError) as err, write_txn(world):
            op()
        assert err.value.code == "card_not_active"


def test_a_found_card_works_again_if_not_yet_replaced(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        cards.report_lost(world, "C00001", clock.now_ms())
        assert cards.report_found(world, "C00001", clock.now_ms())["status"] == "active"


def test_a_replacement_needs_an_unused_card_number(world, clock) -> None:  # noqa: ANN001
    with pytest.raises(DomainError) as err, write_txn(world):
        cards.replace(world, "C00001", "C00002", clock.now_ms())
    assert err.value.code == "already_exists"
    assert cards.get(world, "C00001")["status"] == "active"


def test_a_leaver_subsidy_returns_to_their_unit_and_self_purse_stays(world, clock) -> None:  # noqa: ANN001
    refund_before = ledger.balance(world, ledger.unit_refund("U01"))
    with write_txn(world):
        result = leavers.leave(world, "H00001", clock.now_ms())
    assert result["subsidy_returned_fen"] == 30_000 and result["self_fen"] == SELF_FEN
    assert purses(world, "H00001") == (0, SELF_FEN)
    assert ledger.balance(world, ledger.unit_refund("U01")) - refund_before == 30_000
    assert all_violations(world) == []


def test_a_leavers_cards_stop_working_and_terminals_are_told(world, clock) -> None:  # noqa: ANN001
    v = current_version(world)
    with write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
    [delta] = deltas_since(world, v)
    holder = next(c for c in delta.changes if c["kind"] == "holder")
    assert holder["blocked"] is True and holder["subsidy_fen"] == 0
    assert {"kind": "card", "card_id": "C00001", "holder_id": "H00001", "status": "retired"} in delta.changes


def test_an_active_cardholder_cannot_get_card_money_paid_out(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        leavers.set_bank_account(
            world, "H00001", "6217003320001234567", now_ms=clock.now_ms(), changed_by="admin"
        )
    with pytest.raises(DomainError) as err, write_txn(world):
        leavers.request_refund(world, "H00001", clock.now_ms(), "admin")
    assert err.value.code == "holder_active"


def test_an_approved_refund_pays_the_self_purse_to_the_own_bank_account(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
        req = leavers.request_refund(
            world, "H00001", clock.now_ms(), "clerk:U01", bank_account="6217 0033 2000 1234 567"
        )
    assert req["status"] == "pending" and req["bank_account"] == "6217 **** 4567"
    assert purses(world, "H00001") == (0, SELF_FEN)  # nothing moves until approved
    with write_txn(world):  # the account was registered just now: two administrators approve
        first = leavers.approve_refund(world, req["id"], clock.now_ms(), "admin:A")
        assert (first["status"], first["first_approved_by"]) == ("pending", "admin:A")
        assert purses(world, "H00001") == (0, SELF_FEN)
        done = leavers.approve_refund(world, req["id"], clock.now_ms(), "admin:B")
    assert (done["status"], done["amount_fen"]) == ("approved", SELF_FEN)
    assert purses(world, "H00001") == (0, 0)
    assert ledger.balance(world, ledger.SELF_REFUND_BANK) == SELF_FEN
    assert all_violations(world) == []


def test_a_refund_goes_only_to_the_registered_own_account(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        leavers.set_bank_account(
            world, "H00001", "6217003320001234567", now_ms=clock.now_ms(), changed_by="admin"
        )
        leavers.leave(world, "H00001", clock.now_ms())
    with pytest.raises(DomainError) as err, write_txn(world):
        leavers.request_refund(world, "H00001", clock.now_ms(), "admin", bank_account="6222000000000000001")
    assert err.value.code == "invalid_input"


def test_a_refund_needs_a_registered_bank_account(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
    with pytest.raises(DomainError) as err, write_txn(world):
        leavers.request_refund(world, "H00001", clock.now_ms(), "admin")
    assert err.value.code == "no_bank_account"


def test_a_refund_waits_for_terminals_that_may_still_hold_sales(world, clock) -> None:  # noqa: ANN001
    creds = terminal(world, "C01", clock.now_ms())
    with write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
        req = leavers.request_refund(
            world, "H00001", clock.now_ms(), "admin", bank_account="6217003320001234567"
        )
    with write_txn(world):  # the account was registered just now: the first of two approvals
        leavers.approve_refund(world, req["id"], clock.now_ms(), "admin:A")
    with pytest.raises(DomainError) as err, write_txn(world):
        leavers.approve_refund(world, req["id"], clock.now_ms(), "admin:B")
    assert err.value.code == "terminals_pending" and creds.terminal_id in err.value.detail
    clock.advance_ms(60_000)
    status = Status(state="online", watermark_ms=clock.now_ms(), clock_ms=clock.now_ms())
    with write_txn(world):
        record_status(world, creds.terminal_id, status, clock.now_ms())
        assert leavers.approve_refund(world, req["id"], clock.now_ms(), "admin:B")["amount_fen"] == SELF_FEN


def test_a_decided_refund_cannot_be_decided_again(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
        req = leavers.request_refund(
            world, "H00001", clock.now_ms(), "admin", bank_account="6217003320001234567"
        )
        leavers.reject_refund(world, req["id"], clock.now_ms(), "admin", "申请人身份待核实")
    with pytest.raises(DomainError) as err, write_txn(world):
        leavers.approve_refund(world, req["id"], clock.now_ms(), "admin")
    assert err.value.code == "refund_decided"
    assert purses(world, "H00001") == (0, SELF_FEN)


def test_leaving_twice_is_refused_and_moves_no_money(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
    total = ledger.balance(world, ledger.unit_refund("U01"))
    with pytest.raises(DomainError) as err, write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
    assert err.value.code == "holder_left"
    assert ledger.balance(world, ledger.unit_refund("U01")) == total


def test_a_leaver_cannot_get_a_replacement_card(world, clock) -> None:  # noqa: ANN001
    with write_txn(world):
        leavers.leave(world, "H00001", clock.now_ms())
    with pytest.raises(DomainError) as err, write_txn(world):
        cards.replace(world, "C00001", "NEW0001", clock.now_ms())
    assert err.value.code == "holder_left"
