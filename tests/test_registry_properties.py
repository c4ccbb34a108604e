"""Property tests: registry operations never create, lose or move money they should not.

* Card operations (lost, found, replace) and roster re-imports never change a purse.
* A leaver's money is conserved: what the purses held = subsidy returned to the unit +
  self purse refunded to the bank + what is left; the ledger invariants hold throughout.
* Any roster a clerk can write (names with commas, quotes, Chinese, spaces) imports, and
  importing it again changes nothing.
"""

from __future__ import annotations

import csv
import io
import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.books import ledger
from server.closing.check import all_violations
from server.infra.db import open_db, write_txn
from server.registry import cards, funds, leavers, roster
from server.registry import units as registry
from server.registry.holders import holder_change
from shared.errors import DomainError

NOW = 1_767_672_000_000
HOLDERS = ["H1", "H2", "H3"]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), st.sampled_from(HOLDERS), st.integers(1, 50_000)),
        st.tuples(st.just("lost"), st.sampled_from(HOLDERS)),
        st.tuples(st.just("found"), st.sampled_from(HOLDERS)),
        st.tuples(st.just("replace"), st.sampled_from(HOLDERS)),
        st.tuples(st.just("leave"), st.sampled_from(HOLDERS)),
        st.tuples(st.just("refund"), st.sampled_from(HOLDERS)),
    ),
    max_size=25,
)


def fresh() -> sqlite3.Connection:
    conn = open_db(":memory:")
    with write_txn(conn):
        registry.add_unit(conn, "U1", "市财政局", 30_000)
        for h in HOLDERS:
            registry.add_holder(conn, h, "U1", f"人{h}", f"{h}-card-0", staff_no=h, now_ms=NOW)
            # registered long ago: a refund needs one approval (see test_refund_approval)
            leavers.set_bank_account(
                conn, h, "6217003320001234567", now_ms=NOW - 40 * 86_400_000, changed_by="import"
            )
        funds.allocate(conn, "U1", "2026Q1", None, NOW)
    return conn


def active_card(conn: sqlite3.Connection, holder_id: str) -> str | None:
    row = conn.execute(
        "SELECT card_id FROM cards WHERE holder_id = ? AND replaced_by IS NULL "
        "ORDER BY changed_at_ms DESC, card_id DESC",
        (holder_id,),
    ).fetchone()
    return row[0] if row else None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_registry_operations_conserve_every_fen(ops: list[tuple]) -> None:
    conn = fresh()
    topped = dict.fromkeys(HOLDERS, 0)
    returned = dict.fromkeys(HOLDERS, 0)
    refunded = dict.fromkeys(HOLDERS, 0)
    serial = 0
    for op in ops:
        kind, h = op[0], op[1]
        card = active_card(conn, h)
        before = holder_change(conn, h, NOW)
        try:
            with write_txn(conn):
                if kind == "topup" and card is not None:
                    left = (
                        conn.execute("SELECT status FROM holders WHERE id = ?", (h,)).fetchone()[0] == "left"
                    )
                    if not left:  # the bank only tops up a card in use
                        funds.topup(conn, card, op[2], NOW)
                        topped[h] += op[2]
                elif kind == "lost" and card is not None:
                    cards.report_lost(conn, card, NOW)
                elif kind == "found" and card is not None:
                    cards.report_found(conn, card, NOW)
                elif kind == "replace" and card is not None:
                    serial += 1
                    cards.replace(conn, card, f"{h}-card-{serial}", NOW)
                elif kind == "leave":
                    returned[h] += leavers.leave(conn, h, NOW)["subsidy_returned_fen"]
                elif kind == "refund":
                    req = leavers.request_refund(conn, h, NOW, "admin")
                    refunded[h] += leavers.approve_refund(conn, req["id"], NOW, "admin")["amount_fen"]
        except DomainError:
            after = holder_change(conn, h, NOW)
            assert (after["subsidy_fen"], after["self_fen"]) == (before["subsidy_fen"], before["self_fen"])
            continue
        if kind in {"lost", "found", "replace"}:
            after = holder_change(conn, h, NOW)
            assert (after["subsidy_fen"], after["self_fen"]) == (before["subsidy_fen"], before["self_fen"])
        assert all_violations(conn) == []
    for h in HOLDERS:
        now = holder_change(conn, h, NOW)
        assert now["subsidy_fen"] + returned[h] == 30_000
        assert now["self_fen"] + refunded[h] == topped[h]
        assert now["self_fen"] >= 0 and now["subsidy_fen"] >= 0
    assert ledger.balance(conn, ledger.unit_refund("U1")) == sum(returned.values())
    assert ledger.balance(conn, ledger.SELF_REFUND_BANK) == sum(refunded.values())
    assert ledger.ledger_sum(conn) == 0


NAMES = (
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")),
        min_size=1,
        max_size=20,
    )
    .map(str.strip)
    .filter(bool)
)
STAFF = st.lists(
    st.tuples(NAMES, st.from_regex(r"[A-Z]{2}[0-9]{3}", fullmatch=True)),
    min_size=1,
    max_size=12,
    unique_by=lambda t: t[1],
)


def roster_csv(staff: list[tuple[str, str]], cards_: dict[str, str]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["单位名称", "姓名", "工号", "卡号"])
    for name, no in staff:
        w.writerow(["市财政局", name, no, cards_[no]])
    return ("\ufeff" + out.getvalue()).encode()


@settings(max_examples=40, deadline=None)
@given(STAFF)
def test_any_roster_a_clerk_writes_imports_and_reimports_without_change(staff: list[tuple[str, str]]) -> None:
    conn = open_db(":memory:")
    with write_txn(conn):
        registry.add_unit(conn, "U1", "市财政局", 0)
    cards_ = {no: f"04{i:08X}" for i, (_, no) in enumerate(staff)}
    data = roster_csv(staff, cards_)
    with write_txn(conn):
        first = roster.import_roster(conn, data, NOW)
    assert first["new_holders"] == len(staff)
    stored = {r["staff_no"]: r["name"] for r in conn.execute("SELECT staff_no, name FROM holders")}
    assert stored == dict((no, name) for name, no in staff)
    version = conn.execute("SELECT max(version) FROM deltas").fetchone()[0]
    with write_txn(conn):
        second = roster.import_roster(conn, data, NOW)
    assert second["unchanged"] == len(staff)
    assert conn.execute("SELECT count(*) FROM holders").fetchone()[0] == len(staff)
    assert conn.execute("SELECT max(version) FROM deltas").fetchone()[0] == version
