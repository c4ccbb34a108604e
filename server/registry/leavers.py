"""Staff who leave: the subsidy goes back to the unit, the self purse to their own bank.

When a cardholder leaves (离职/调出):

* every card that can still pay is retired and the holder is blocked, in one delta;
* the **subsidy purse** (就餐经费) is returned at once to the unit that paid it: one
  ledger txn of kind ``leaver_return`` moving the whole balance to ``refund:unit:<id>``
  (the account where money returned to a unit collects; year-end clearing uses it too,
  with its own txn kind). A holder never changes unit — a person who moves gets a new
  工号 in the new unit — so the unit that paid is the holder's unit;
* the **self purse** (自费充值) stays theirs (第十条: 自费充值金额，系统自动保留) until a
  refund to **their own bank account** is requested and an administrator approves it.
  Approval moves the whole self purse to ``bank:self_refund`` in one txn of kind
  ``self_refund``. There is no cash path, and no refund at all for an active cardholder
  (不得提现).

A sale a terminal approved offline before the leave may still arrive afterwards; it is
applied as usual (from the self purse, the subsidy being gone). So an approval waits
until every terminal's watermark has passed the leave time (``terminals_pending``
otherwise), and refunds whatever the self purse holds at that moment.

Every change of the bank account is logged (:mod:`server.registry.bank_accounts`). A
refund to an account changed within ``refund_second_approval_days`` (default 30) needs two
approvals by two different administrators, neither of whom requested the refund or changed
the account (``second_approval_needed`` otherwise): the first approval is recorded and pays
nothing, the second pays. Both see the change history with the request.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from server.books import ledger
from server.downstream.changes import card_change
from server.downstream.deltas import record_delta
from server.registry import bank_accounts, ceilings
from server.registry.bank_accounts import mask
from server.registry.holders import holder_change
from server.registry.roster import check_bank_account
from server.registry.terminals import laggards
from shared.errors import DomainError

DAY_MS = 86_400_000
__all__ = ["mask"]  # re-exported: people and the CLI mask accounts through this module


def _holder(conn: sqlite3.Connection, holder_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM holders WHERE id = ?", (holder_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"holder {holder_id}")
    return row


def leave(conn: sqlite3.Connection, holder_id: str, now_ms: int) -> dict[str, Any]:
    """Record that a cardholder left; returns what happened to their money."""
    holder = _holder(conn, holder_id)
    if holder["status"] == "left":
        raise DomainError("holder_left", holder_id)
    conn.execute(
        "UPDATE holders SET status = 'left', left_at_ms = ?, blocked = 1 WHERE id = ?", (now_ms, holder_id)
    )
    retired = [
        r[0]
        for r in conn.execute(
            "SELECT card_id FROM cards WHERE holder_id = ? AND status = 'active' ORDER BY card_id",
            (holder_id,),
        )
    ]
    conn.executemany(
        "UPDATE cards SET status = 'retired', changed_at_ms = ? WHERE card_id = ?",
        [(now_ms, c) for c in retired],
    )
    by_year = {y: fen for y, fen in ledger.subsidy_by_year(conn, holder_id).items() if fen > 0}
    subsidy = sum(by_year.values())
    if subsidy > 0:
        refund = ledger.unit_refund(holder["unit_id"])
        ledger.post(
            conn,
            "leaver_return",
            [
                ledger.Move(ledger.subsidy_purse(holder_id, y), refund, fen)
                for y, fen in sorted(by_year.items())
            ],
            now_ms,
            ref=f"leave/{holder_id}",
            memo="subsidy returned to the unit that paid it",
        )
    changes = [holder_change(conn, holder_id, now_ms)]
    changes += [card_change(c, holder_id, "retired") for c in retired]
    record_delta(conn, changes, now_ms)
    return {
        "holder_id": holder_id,
        "unit_id": holder["unit_id"],
        "subsidy_returned_fen": max(subsidy, 0),
        "self_fen": ledger.balance(conn, ledger.self_purse(holder_id)),
        "cards_retired": retired,
    }


def set_bank_account(
    conn: sqlite3.Connection, holder_id: str, bank_account: str, *, now_ms: int, changed_by: str
) -> str:
    """Record the person's own bank account (建行储蓄卡) — where a refund may go — and log
    the change (who, when, old and new masked)."""
    holder = _holder(conn, holder_id)
    if conn.execute(
        "SELECT 1 FROM refund_requests WHERE holder_id = ? AND status = 'pending'", (holder_id,)
    ).fetchone():
        raise DomainError(
            "refund_decided", "a refund request is pending: decide it before changing the account"
        )
    account = check_bank_account(bank_account)
    conn.execute("UPDATE holders SET bank_account = ? WHERE id = ?", (account, holder_id))
    bank_accounts.record_change(conn, holder_id, holder["bank_account"], account, changed_by, now_ms)
    return account


def request_refund(
    conn: sqlite3.Connection, holder_id: str, now_ms: int, requested_by: str, bank_account: str | None = None
) -> dict[str, Any]:
    """Ask for the self purse to be paid to the leaver's own registered bank account."""
    holder = _holder(conn, holder_id)
    if holder["status"] != "left":
        raise DomainError("holder_active", f"{holder_id} has not left; card money cannot be withdrawn")
    account = holder["bank_account"]
    if bank_account is not None:
        given = check_bank_account(bank_account)
        if account is None:
            account = set_bank_account(conn, holder_id, given, now_ms=now_ms, changed_by=requested_by)
        elif given != account:
            raise DomainError(
                "invalid_input",
                "that is not the bank account registered for this person",
                zh="该账号不是此人登记的银行账号",
            )
    if account is None:
        raise DomainError("no_bank_account", holder_id)
    if ledger.balance(conn, ledger.self_purse(holder_id)) <= 0:
        raise DomainError("nothing_to_refund", holder_id)
    if conn.execute(
        "SELECT 1 FROM refund_requests WHERE holder_id = ? AND status = 'pending'", (holder_id,)
    ).fetchone():
        raise DomainError("already_exists", f"a refund request for {holder_id} is pending")
    request_id = conn.execute(
        "INSERT INTO refund_requests(holder_id, bank_account, requested_at_ms, requested_by) "
        "VALUES (?, ?, ?, ?) RETURNING id",
        (holder_id, account, now_ms, requested_by),
    ).fetchone()[0]
    return get_request(conn, int(request_id), now_ms)


def approve_refund(conn: sqlite3.Connection, request_id: int, now_ms: int, decided_by: str) -> dict[str, Any]:
    """Pay the whole self purse to the registered bank account (one ledger txn) — or, when
    the account changed recently, record the first of the two approvals needed."""
    req = _pending(conn, request_id)
    recent = recent_account_changes(conn, req["holder_id"], now_ms)
    if recent:
        parties = {c["changed_by"] for c in recent} | {req["requested_by"]}
        if decided_by in parties:
            raise DomainError(
                "second_approval_needed",
                f"{decided_by} requested this refund or changed the account: "
                "another administrator must approve",
            )
        if req["first_approved_by"] is None:
            conn.execute(
                "UPDATE refund_requests SET first_approved_by = ?, first_approved_at_ms = ? WHERE id = ?",
                (decided_by, now_ms, request_id),
            )
            return get_request(conn, request_id, now_ms)
        if req["first_approved_by"] == decided_by:
            raise DomainError(
                "second_approval_needed",
                f"{decided_by} approved first: a different administrator must approve",
            )
    holder = _holder(conn, req["holder_id"])
    waiting = laggards(conn, holder["left_at_ms"])
    if waiting:
        ids = ", ".join(str(t["terminal_id"]) for t in waiting[:10])
        raise DomainError(
            "terminals_pending", f"{len(waiting)} terminal(s) not yet past the leave time: {ids}"
        )
    amount = ledger.balance(conn, ledger.self_purse(req["holder_id"]))
    if amount <= 0:
        raise DomainError("nothing_to_refund", f"{req['holder_id']}: self purse is {amount} fen")
    txn_id = ledger.post(
        conn,
        "self_refund",
        [ledger.Move(ledger.self_purse(req["holder_id"]), ledger.SELF_REFUND_BANK, amount)],
        now_ms,
        ref=f"refund/{request_id}",
        memo=f"to own bank account {mask(req['bank_account'])}",
    )
    conn.execute(
        "UPDATE refund_requests SET status = 'approved', decided_at_ms = ?, decided_by = ?, amount_fen = ?, "
        "txn_id = ? WHERE id = ?",
        (now_ms, decided_by, amount, txn_id, request_id),
    )
    record_delta(conn, [holder_change(conn, req["holder_id"], now_ms)], now_ms)
    return get_request(conn, request_id, now_ms)


def recent_account_changes(conn: sqlite3.Connection, holder_id: str, now_ms: int) -> list[dict[str, Any]]:
    """The account changes within the second-approval window before ``now_ms``."""
    days = ceilings.get(conn, "refund_second_approval_days")
    return bank_accounts.changes(conn, holder_id, since_ms=now_ms - days * DAY_MS)


def reject_refund(
    conn: sqlite3.Connection, request_id: int, now_ms: int, decided_by: str, reason: str
) -> dict[str, Any]:
    _pending(conn, request_id)
    if not reason.strip():
        raise DomainError("invalid_input", "say why the refund is rejected", zh="请填写驳回理由")
    conn.execute(
        "UPDATE refund_requests SET status = 'rejected', decided_at_ms = ?, decided_by = ?, reason = ? "
        "WHERE id = ?",
        (now_ms, decided_by, reason.strip(), request_id),
    )
    return get_request(conn, request_id, now_ms)


def _pending(conn: sqlite3.Connection, request_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM refund_requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"refund request {request_id}")
    if row["status"] != "pending":
        raise DomainError("refund_decided", f"refund request {request_id} is {row['status']}")
    return row


def request_json(conn: sqlite3.Connection, row: sqlite3.Row, now_ms: int | None = None) -> dict[str, Any]:
    """A request as the approver sees it: with the account's change history, and whether
    (given ``now_ms``) a pending one needs a second administrator."""
    history = bank_accounts.changes(conn, row["holder_id"])
    recent = recent_account_changes(conn, row["holder_id"], now_ms) if now_ms is not None else []
    return {
        "id": row["id"],
        "holder_id": row["holder_id"],
        "unit_id": row["unit_id"],
        "bank_account": mask(row["bank_account"]),
        "status": row["status"],
        "requested_at_ms": row["requested_at_ms"],
        "requested_by": row["requested_by"],
        "decided_at_ms": row["decided_at_ms"],
        "decided_by": row["decided_by"],
        "reason": row["reason"],
        "amount_fen": row["amount_fen"],
        "self_fen": ledger.balance(conn, ledger.self_purse(row["holder_id"])),
        "first_approved_by": row["first_approved_by"],
        "first_approved_at_ms": row["first_approved_at_ms"],
        "second_approval_needed": bool(recent) and row["status"] == "pending",
        "account_changes": history,
    }


_SELECT = "SELECT r.*, h.unit_id FROM refund_requests r JOIN holders h ON h.id = r.holder_id "


def get_request(conn: sqlite3.Connection, request_id: int, now_ms: int | None = None) -> dict[str, Any]:
    row = conn.execute(_SELECT + "WHERE r.id = ?", (request_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"refund request {request_id}")
    return request_json(conn, row, now_ms)


def list_requests(
    conn: sqlite3.Connection,
    *,
    unit_id: str | None = None,
    status: str | None = None,
    now_ms: int | None = None,
) -> list[dict[str, Any]]:
    where, args = [], []
    if unit_id is not None:
        where.append("h.unit_id = ?")
        args.append(unit_id)
    if status is not None:
        where.append("r.status = ?")
        args.append(status)
    sql = _SELECT + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY r.id"
    return [request_json(conn, r, now_ms) for r in conn.execute(sql, args)]
