"""Payment PINs (支付密码) for sales above the no-PIN limit (小额免密, issue 12).

A sale up to ``max_sale_fen`` needs no PIN. Above it the terminal asks the cardholder for
their 6-digit PIN and checks it with the server online (``POST
/api/v1/terminals/<id>/pin-check``); a right PIN gives an **approval** bound to that card,
terminal and amount, valid for :data:`APPROVAL_TTL_MS`, which the sale carries and the
server's sale checks accept once (:mod:`server.sales.plausibility`).

The PIN is stored only as a salted scrypt hash (``hashlib.scrypt``, standard library: a
memory-hard slow hash, so a copied database does not give PINs away cheaply; six digits
are a small space, so the lockout is the main defence online) and compared in constant
time. It is never logged or returned.

Five wrong tries in a row lock the PIN until the next midnight in Asia/Shanghai
(:func:`after_failure`, a pure rule); a right PIN clears the count. A diner sets their own
PIN (giving the old one when one is set); a clerk of their unit or an admin resets it.
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
from dataclasses import dataclass

from shared.clock import DAY_MS, start_of_china_day_ms
from shared.errors import DomainError
from shared.pin_hash import PIN_LENGTH as PIN_LENGTH  # one definition for payment and operator PINs
from shared.pin_hash import SCRYPT_N, SCRYPT_P, SCRYPT_R, check_pin_format, hash_pin

MAX_TRIES = 5
APPROVAL_TTL_MS = 2 * 60_000  # the sale must be made within this time of the check


# --- pure rules ------------------------------------------------------------------------


def next_china_midnight_ms(now_ms: int) -> int:
    return start_of_china_day_ms(now_ms) + DAY_MS


def is_locked(locked_until_ms: int | None, now_ms: int) -> bool:
    return locked_until_ms is not None and now_ms < locked_until_ms


def after_failure(failed_tries: int, locked_until_ms: int | None, now_ms: int) -> tuple[int, int | None]:
    """(failed tries, locked until) after one more wrong PIN at ``now_ms``. A lock that has
    ended starts the count again; the fifth wrong try locks until the next midnight."""
    if locked_until_ms is not None and now_ms >= locked_until_ms:
        failed_tries = 0
    failed = failed_tries + 1
    return failed, (next_china_midnight_ms(now_ms) if failed >= MAX_TRIES else None)


def _params_text(n: int, r: int, p: int) -> str:
    return f"scrypt:n={n},r={r},p={p}"


def _parse_params(text: str) -> tuple[int, int, int]:
    kind, _, rest = text.partition(":")
    values = dict(part.split("=", 1) for part in rest.split(","))
    if kind != "scrypt":
        raise ValueError(f"unknown PIN hash {kind!r}")
    return int(values["n"]), int(values["r"]), int(values["p"])


# --- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class PinCheck:
    """The outcome of one PIN check: ``ok`` | ``wrong`` | ``locked`` | ``not_set``."""

    result: str
    tries_left: int = 0
    locked_until_ms: int | None = None


def set_pin(conn: sqlite3.Connection, holder_id: str, pin: str, now_ms: int, by: str) -> None:
    """Store a new PIN for the holder (clears tries and any lock). Inside the caller's txn."""
    pin = check_pin_format(pin)
    if conn.execute("SELECT 1 FROM holders WHERE id = ?", (holder_id,)).fetchone() is None:
        raise DomainError("not_found", f"holder {holder_id}")
    salt = secrets.token_bytes(16)
    digest = hash_pin(pin, salt)
    conn.execute(
        "INSERT INTO holder_pins(holder_id, hash_hex, salt_hex, params, failed_tries, locked_until_ms, "
        "updated_at_ms, updated_by) VALUES (?, ?, ?, ?, 0, NULL, ?, ?) "
        "ON CONFLICT(holder_id) DO UPDATE SET hash_hex = excluded.hash_hex, salt_hex = excluded.salt_hex, "
        "params = excluded.params, failed_tries = 0, locked_until_ms = NULL, "
        "updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
        (holder_id, digest.hex(), salt.hex(), _params_text(SCRYPT_N, SCRYPT_R, SCRYPT_P), now_ms, by),
    )


def set_own_pin(
    conn: sqlite3.Connection, holder_id: str, pin: str, old_pin: object, now_ms: int, by: str
) -> DomainError | None:
    """A diner sets their own PIN (inside the caller's write txn): when one is set, the old
    PIN must be given and is checked like any other (a wrong one counts as a wrong try, the
    fifth locks). Returns the refusal for the caller to raise *after* committing — so the
    failed try is kept — or None when the new PIN was set."""
    pin = check_pin_format(pin)
    if has_pin(conn, holder_id):
        check = verify(conn, holder_id, old_pin if isinstance(old_pin, str) else "", now_ms)
        if check.result == "locked":
            return DomainError("pin_locked", "too many wrong tries", field="old_pin")
        if check.result != "ok":
            return DomainError(
                "pin_wrong",
                f"old_pin wrong, {check.tries_left} tries left",
                zh=f"还可再试 {check.tries_left} 次",
                field="old_pin",
            )
    set_pin(conn, holder_id, pin, now_ms, by)
    return None


def has_pin(conn: sqlite3.Connection, holder_id: str) -> bool:
    return conn.execute("SELECT 1 FROM holder_pins WHERE holder_id = ?", (holder_id,)).fetchone() is not None


def verify(conn: sqlite3.Connection, holder_id: str, pin: str, now_ms: int) -> PinCheck:
    """Check a PIN and record the outcome (tries, lock). Inside the caller's write txn."""
    row = conn.execute(
        "SELECT hash_hex, salt_hex, params, failed_tries, locked_until_ms FROM holder_pins "
        "WHERE holder_id = ?",
        (holder_id,),
    ).fetchone()
    if row is None:
        return PinCheck("not_set")
    stored, salt_hex, params, failed, locked_until = row
    if is_locked(locked_until, now_ms):
        return PinCheck("locked", locked_until_ms=locked_until)
    n, r, p = _parse_params(params)
    # a malformed PIN is hashed too: no early answer tells it apart from a wrong one
    candidate = hash_pin(pin if isinstance(pin, str) else "", bytes.fromhex(salt_hex), n, r, p)
    if hmac.compare_digest(candidate, bytes.fromhex(stored)):
        conn.execute(
            "UPDATE holder_pins SET failed_tries = 0, locked_until_ms = NULL WHERE holder_id = ?",
            (holder_id,),
        )
        return PinCheck("ok", tries_left=MAX_TRIES)
    failed, locked_until = after_failure(failed, locked_until, now_ms)
    conn.execute(
        "UPDATE holder_pins SET failed_tries = ?, locked_until_ms = ? WHERE holder_id = ?",
        (failed, locked_until, holder_id),
    )
    if locked_until is not None:
        return PinCheck("locked", locked_until_ms=locked_until)
    return PinCheck("wrong", tries_left=MAX_TRIES - failed)


# --- approvals -------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    approval_id: str
    holder_id: str
    card_id: str
    terminal_id: str
    amount_fen: int
    issued_at_ms: int
    expires_at_ms: int
    sale_id: str | None


def issue_approval(
    conn: sqlite3.Connection, holder_id: str, card_id: str, terminal_id: str, amount_fen: int, now_ms: int
) -> Approval:
    approval = Approval(
        secrets.token_hex(16),
        holder_id,
        card_id,
        terminal_id,
        amount_fen,
        now_ms,
        now_ms + APPROVAL_TTL_MS,
        None,
    )
    conn.execute(
        "INSERT INTO pin_approvals(approval_id, holder_id, card_id, terminal_id, amount_fen, issued_at_ms, "
        "expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            approval.approval_id,
            holder_id,
            card_id,
            terminal_id,
            amount_fen,
            approval.issued_at_ms,
            approval.expires_at_ms,
        ),
    )
    return approval


def get_approval(conn: sqlite3.Connection, approval_id: str) -> Approval | None:
    row = conn.execute(
        "SELECT approval_id, holder_id, card_id, terminal_id, amount_fen, issued_at_ms, expires_at_ms, "
        "sale_id FROM pin_approvals WHERE approval_id = ?",
        (approval_id,),
    ).fetchone()
    return Approval(*row) if row else None


def use_approval(conn: sqlite3.Connection, approval_id: str, sale_id: str) -> None:
    """Record the sale that used the approval (the sale checks have made sure it was unused)."""
    conn.execute(
        "UPDATE pin_approvals SET sale_id = ? WHERE approval_id = ? AND sale_id IS NULL",
        (sale_id, approval_id),
    )
