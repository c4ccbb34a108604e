"""Who may sign in to the web console: staff accounts and diner accounts (issue 14).

* **Staff** (管理员, 单位经办人, 食堂运营方, 审计) sign in with a user name and a password. An
  account carries one of the API's roles and its scope (a clerk's unit, an operator's company),
  so a signed-in browser is the same :class:`~server.infra.auth.Principal` a bearer token is,
  and the same role and scope checks apply. ``canteen-server user-add`` creates one with a
  first password that must be changed at the first log-in.
* **Diners** sign in with their 工号 and a password they chose themselves, through a one-time
  **activation code** (激活码) their unit's clerk prints (:func:`issue_activation`). A diner's
  principal is their cardholder: they see only themselves.

Passwords and activation codes are stored only as salted, deliberately slow hashes: werkzeug's
``scrypt`` (it ships with Flask, so no further dependency; memory-hard; the parameters are
written into each hash, so they can be raised later without invalidating old ones). Five
failed log-ins in a row lock an account for 15 minutes (:func:`after_failure`, a pure rule);
every log-in, failure, lock, activation and password change is written to
``web_login_events`` and failures and locks to the ``canteen.web`` log.

The functions that check a password return a :class:`LoginResult` instead of raising, so that
the caller can commit the failure count *and* refuse: a refusal raised inside the write
transaction would roll the count back and the lock-out would never come.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from server.infra.auth import Principal
from shared.clock import DAY_MS
from shared.errors import DomainError

log = logging.getLogger("canteen.web")

STAFF_ROLES = ("admin", "clerk", "operator", "auditor")
MAX_FAILURES = 5
LOCK_MS = 15 * 60_000
ACTIVATION_VALID_MS = 14 * DAY_MS
# an activation code: 10 symbols from 31 that cannot be mistaken for one another on paper
ACTIVATION_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
ACTIVATION_LENGTH = 10
PASSWORD_MIN, PASSWORD_MAX = 8, 128
HASH_METHOD = "scrypt"
_USERNAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{1,31}")


# --- pure rules ---------------------------------------------------------------------------


def is_locked(locked_until_ms: int | None, now_ms: int) -> bool:
    return locked_until_ms is not None and now_ms < locked_until_ms


def after_failure(failed: int, locked_until_ms: int | None, now_ms: int) -> tuple[int, int | None]:
    """(failures, locked until) after one more failed log-in at ``now_ms``. A lock that has run
    out starts the count again; the fifth failure in a row locks for :data:`LOCK_MS`."""
    if locked_until_ms is not None and now_ms >= locked_until_ms:
        failed = 0
    failed += 1
    return failed, (now_ms + LOCK_MS if failed >= MAX_FAILURES else None)


def password_problem(password: str, login: str) -> str | None:
    """Why ``password`` may not be chosen (the error code), or None when it may."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return "password_weak"
    if not any(c.isalpha() for c in password) or not any(c.isdigit() for c in password):
        return "password_weak"
    if password.casefold() == login.casefold():
        return "password_weak"
    return None


def check_username(name: str) -> str:
    if not _USERNAME.fullmatch(name):
        raise DomainError(
            "invalid_input",
            "a user name is 2-32 letters, digits, '_', '.' or '-', starting with a letter",
            zh="用户名为 2–32 位字母、数字或 _ . -，以字母开头",
        )
    return name


def new_activation_code() -> str:
    return "".join(secrets.choice(ACTIVATION_ALPHABET) for _ in range(ACTIVATION_LENGTH))


def normalise_code(text: str) -> str:
    """What a diner typed, as the code was printed: upper case, without spaces or dashes."""
    return re.sub(r"[\s-]", "", text).upper()


def hash_secret(secret: str) -> str:
    return generate_password_hash(secret, method=HASH_METHOD)


_DUMMY_HASH: list[str] = []


def _spend_a_check(secret: str) -> None:
    """Check ``secret`` against a hash of nothing: an unknown user name takes as long to refuse
    as a wrong password, so timing does not tell which user names exist."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_secret(secrets.token_hex(16)))
    check_password_hash(_DUMMY_HASH[0], secret)


# --- accounts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    id: int
    kind: str
    login: str
    role: str
    unit_id: str | None
    operator: str | None
    holder_id: str | None
    display_name: str
    must_change: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Account:
        return cls(
            row["id"],
            row["kind"],
            row["login"],
            row["role"],
            row["unit_id"],
            row["operator"],
            row["holder_id"],
            row["display_name"],
            bool(row["must_change"]),
        )

    def principal(self) -> Principal:
        """The caller this account speaks for: the same principal a bearer token of the same
        role and scope gives, so the API's role and scope checks apply unchanged."""
        return Principal(
            self.role,
            self.unit_id,
            self.operator,
            holder_id=self.holder_id,
            token_id=f"web:{self.kind}:{self.login}",
            label=self.display_name or self.login,
        )


@dataclass(frozen=True)
class LoginResult:
    account: Account | None
    refusal: str | None = None  # an error code when refused
    zh: str = ""  # a Chinese detail for the person (which field, when)
    field: str = ""  # the form field the refusal belongs beside

    def raise_refusal(self) -> None:
        if self.refusal:
            raise DomainError(self.refusal, self.refusal, zh=self.zh, field=self.field)


def record_event(
    conn: sqlite3.Connection, now_ms: int, login: str, event: str, account_id: int | None, remote: str = ""
) -> None:
    conn.execute(
        "INSERT INTO web_login_events(at_ms, login, account_id, event, remote) VALUES (?, ?, ?, ?, ?)",
        (now_ms, login[:64], account_id, event, remote[:64]),
    )


def get_account(conn: sqlite3.Connection, account_id: int) -> Account | None:
    row = conn.execute("SELECT * FROM web_accounts WHERE id = ? AND disabled = 0", (account_id,)).fetchone()
    return Account.from_row(row) if row else None


def add_staff(
    conn: sqlite3.Connection,
    username: str,
    role: str,
    password: str,
    now_ms: int,
    *,
    unit_id: str | None = None,
    operator: str | None = None,
    display_name: str = "",
) -> Account:
    """A staff account whose first password must be changed at the first log-in. A clerk
    needs a unit, an operator an operator (company) name; other roles take no scope."""
    check_username(username)
    if role not in STAFF_ROLES:
        raise DomainError("invalid_input", f"role must be one of {', '.join(STAFF_ROLES)}")
    if role == "clerk" and not unit_id:
        raise DomainError(
            "invalid_input", "a clerk needs a unit (--unit)", zh="单位经办人须指定单位（--unit）"
        )
    if role == "operator" and not operator:
        raise DomainError(
            "invalid_input", "an operator needs --operator", zh="运营方账户须指定运营单位（--operator）"
        )
    unit_id = unit_id if role == "clerk" else None
    operator = operator if role == "operator" else None
    if unit_id and conn.execute("SELECT 1 FROM units WHERE id = ?", (unit_id,)).fetchone() is None:
        raise DomainError("not_found", f"unit {unit_id}", zh=f"单位 {unit_id} 不存在")
    problem = password_problem(password, username)
    if problem:
        raise DomainError(problem, "the first password is too weak")
    if conn.execute("SELECT 1 FROM web_accounts WHERE kind = 'staff' AND login = ?", (username,)).fetchone():
        raise DomainError("already_exists", f"user {username}", zh=f"用户 {username} 已存在")
    cur = conn.execute(
        "INSERT INTO web_accounts(kind, login, role, unit_id, operator, display_name, password_hash, "
        "must_change, created_at_ms) VALUES ('staff', ?, ?, ?, ?, ?, ?, 1, ?)",
        (username, role, unit_id, operator, display_name, hash_secret(password), now_ms),
    )
    record_event(conn, now_ms, username, "created", cur.lastrowid)
    account = get_account(conn, int(cur.lastrowid or 0))
    assert account is not None
    return account


def list_staff(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            "SELECT login, role, unit_id, operator, display_name, must_change, failed_logins, "
            "locked_until_ms, disabled, created_at_ms FROM web_accounts WHERE kind = 'staff' ORDER BY login"
        )
    ]


def _check_password(
    conn: sqlite3.Connection, row: sqlite3.Row, secret: str, column: str, now_ms: int, remote: str
) -> LoginResult:
    """Check ``secret`` against the account's ``column`` hash; count a failure (and lock on the
    fifth), or clear the count on success."""
    login = row["login"]
    if is_locked(row["locked_until_ms"], now_ms):
        record_event(conn, now_ms, login, "refused_locked", row["id"], remote)
        log.warning("web login refused: account %s is locked", login)
        return LoginResult(None, "account_locked")
    stored = row[column]
    if stored and check_password_hash(stored, secret):
        conn.execute(
            "UPDATE web_accounts SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?", (row["id"],)
        )
        return LoginResult(Account.from_row(row))
    if not stored:
        _spend_a_check(secret)
    failed, locked_until = after_failure(row["failed_logins"], row["locked_until_ms"], now_ms)
    conn.execute(
        "UPDATE web_accounts SET failed_logins = ?, locked_until_ms = ? WHERE id = ?",
        (failed, locked_until, row["id"]),
    )
    record_event(conn, now_ms, login, "failed", row["id"], remote)
    log.warning("web login failed for %s (%d in a row) from %s", login, failed, remote or "?")
    if locked_until is not None:
        record_event(conn, now_ms, login, "locked", row["id"], remote)
        log.warning("web login: account %s locked for %d minutes", login, LOCK_MS // 60_000)
        return LoginResult(None, "account_locked")
    return LoginResult(None, "login_failed" if column == "password_hash" else "activation_invalid")


def login_staff(
    conn: sqlite3.Connection, username: str, password: str, now_ms: int, remote: str = ""
) -> LoginResult:
    """Check a staff member's user name and password (call inside a write transaction)."""
    row = conn.execute(
        "SELECT * FROM web_accounts WHERE kind = 'staff' AND login = ? AND disabled = 0", (username,)
    ).fetchone()
    if row is None:
        _spend_a_check(password)
        record_event(conn, now_ms, username, "failed_unknown", None, remote)
        log.warning("web login failed: no staff account %r (from %s)", username[:64], remote or "?")
        return LoginResult(None, "login_failed")
    result = _check_password(conn, row, password, "password_hash", now_ms, remote)
    if result.account:
        record_event(conn, now_ms, username, "login", row["id"], remote)
    return result


def _diner_rows(conn: sqlite3.Connection, staff_no: str, unit_id: str | None) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT a.* FROM web_accounts a JOIN holders h ON h.id = a.holder_id "
        "WHERE a.kind = 'diner' AND a.disabled = 0 AND h.staff_no = ? AND (? IS NULL OR h.unit_id = ?) "
        "ORDER BY h.unit_id",
        (staff_no, unit_id, unit_id),
    ).fetchall()


def _one_diner(
    conn: sqlite3.Connection,
    staff_no: str,
    unit_id: str | None,
    secret: str,
    now_ms: int,
    remote: str,
    what: str,
) -> tuple[sqlite3.Row | None, LoginResult | None]:
    rows = [r for r in _diner_rows(conn, staff_no.strip(), unit_id or None) if r[what] is not None]
    if len(rows) > 1:
        return None, LoginResult(None, "invalid_input", "该工号在多个单位都有，请选择您的单位", "unit_id")
    if not rows:
        _spend_a_check(secret)
        record_event(conn, now_ms, f"工号 {staff_no}", "failed_unknown", None, remote)
        log.warning("web diner login failed: no account for 工号 %r", staff_no[:32])
        return None, LoginResult(None, "login_failed" if what == "password_hash" else "activation_invalid")
    return rows[0], None


def login_diner(
    conn: sqlite3.Connection, staff_no: str, unit_id: str | None, password: str, now_ms: int, remote: str = ""
) -> LoginResult:
    """A diner's 工号 (with their unit when the 工号 is not unique) and password."""
    row, refused = _one_diner(conn, staff_no, unit_id, password, now_ms, remote, "password_hash")
    if row is None:
        assert refused is not None
        return refused
    result = _check_password(conn, row, password, "password_hash", now_ms, remote)
    if result.account:
        record_event(conn, now_ms, row["login"], "login", row["id"], remote)
    return result


def change_password(
    conn: sqlite3.Connection, account_id: int, old: str, new: str, now_ms: int, remote: str = ""
) -> LoginResult:
    """Change a password, giving the current one (a wrong one counts as a failed log-in)."""
    row = conn.execute("SELECT * FROM web_accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"account {account_id}")
    problem = password_problem(new, row["login"] if row["kind"] == "staff" else "")
    if problem:
        return LoginResult(None, problem, field="new_password")
    if old == new:
        return LoginResult(None, "password_reused", field="new_password")
    checked = _check_password(conn, row, old, "password_hash", now_ms, remote)
    if checked.account is None:
        return LoginResult(None, checked.refusal, field="old_password")
    conn.execute(
        "UPDATE web_accounts SET password_hash = ?, must_change = 0, password_changed_at_ms = ? WHERE id = ?",
        (hash_secret(new), now_ms, account_id),
    )
    record_event(conn, now_ms, row["login"], "password_changed", account_id, remote)
    return LoginResult(get_account(conn, account_id))


def confirm_password(
    conn: sqlite3.Connection, account_id: int, password: str, now_ms: int, remote: str = ""
) -> LoginResult:
    """A signed-in person proves it is them again before a sensitive change (a diner resetting
    their payment PIN): a wrong password counts as a failed log-in, the fifth locks."""
    row = conn.execute("SELECT * FROM web_accounts WHERE id = ? AND disabled = 0", (account_id,)).fetchone()
    if row is None:
        raise DomainError("not_found", f"account {account_id}")
    return _check_password(conn, row, password, "password_hash", now_ms, remote)


def reset_staff_password(conn: sqlite3.Connection, username: str, password: str, now_ms: int) -> None:
    """An administrator's reset (CLI): a new first password, to be changed at the next log-in;
    the lock and the failure count are cleared."""
    problem = password_problem(password, username)
    if problem:
        raise DomainError(problem, "the new password is too weak")
    cur = conn.execute(
        "UPDATE web_accounts SET password_hash = ?, must_change = 1, failed_logins = 0, "
        "locked_until_ms = NULL "
        "WHERE kind = 'staff' AND login = ?",
        (hash_secret(password), username),
    )
    if cur.rowcount != 1:
        raise DomainError("not_found", f"user {username}", zh=f"用户 {username} 不存在")
    record_event(conn, now_ms, username, "password_reset", None)


# --- diner activation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    holder_id: str
    name: str
    staff_no: str
    unit_id: str
    unit_name: str
    code: str
    expires_at_ms: int


def issue_activation(conn: sqlite3.Connection, holder_id: str, now_ms: int, by: str) -> Activation:
    """A new one-time activation code for a cardholder (replacing any earlier one), shown once
    to be printed and handed over. The cardholder needs a 工号: it is what they sign in with."""
    holder = conn.execute(
        "SELECT h.*, u.name AS unit_name FROM holders h JOIN units u ON u.id = h.unit_id WHERE h.id = ?",
        (holder_id,),
    ).fetchone()
    if holder is None:
        raise DomainError("not_found", f"holder {holder_id}")
    if not holder["staff_no"]:
        raise DomainError(
            "invalid_input", "the cardholder has no 工号", zh="该人员没有工号，无法开通网页登录"
        )
    code = new_activation_code()
    expires = now_ms + ACTIVATION_VALID_MS
    conn.execute(
        "INSERT INTO web_accounts(kind, login, role, unit_id, holder_id, display_name, created_at_ms, "
        "activation_hash, activation_expires_ms) VALUES ('diner', ?, 'diner', ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, login) DO UPDATE SET activation_hash = excluded.activation_hash, "
        "activation_expires_ms = excluded.activation_expires_ms, display_name = excluded.display_name",
        (holder_id, holder["unit_id"], holder_id, holder["name"], now_ms, hash_secret(code), expires),
    )
    account = conn.execute(
        "SELECT id FROM web_accounts WHERE kind = 'diner' AND login = ?", (holder_id,)
    ).fetchone()
    record_event(conn, now_ms, holder_id, f"activation_issued by {by}", account["id"])
    return Activation(
        holder_id, holder["name"], holder["staff_no"], holder["unit_id"], holder["unit_name"], code, expires
    )


def activation_state(conn: sqlite3.Connection, holder_id: str, now_ms: int) -> str:
    """``none`` (never issued), ``pending`` (a code is out), ``expired`` (its code ran out
    unused) or ``active`` (the diner has set a password)."""
    row = conn.execute(
        "SELECT password_hash, activation_hash, activation_expires_ms FROM web_accounts "
        "WHERE kind = 'diner' AND login = ?",
        (holder_id,),
    ).fetchone()
    if row is None:
        return "none"
    if row["password_hash"]:
        return "active"
    if row["activation_hash"] and now_ms < (row["activation_expires_ms"] or 0):
        return "pending"
    return "expired"


def activate(
    conn: sqlite3.Connection,
    staff_no: str,
    unit_id: str | None,
    code: str,
    password: str,
    now_ms: int,
    remote: str = "",
) -> LoginResult:
    """A diner sets their password with their 工号 and activation code. The code works once,
    until it expires; a wrong code counts as a failed log-in. A password that may not be
    chosen is refused before the code is even looked at, so it is not used up."""
    if password_problem(password, ""):
        return LoginResult(None, "password_weak", field="new_password")
    row, refused = _one_diner(
        conn, staff_no, unit_id, normalise_code(code), now_ms, remote, "activation_hash"
    )
    if row is None:
        assert refused is not None
        return refused
    if not now_ms < (row["activation_expires_ms"] or 0):
        record_event(conn, now_ms, row["login"], "activation_expired", row["id"], remote)
        return LoginResult(None, "activation_invalid")
    checked = _check_password(conn, row, normalise_code(code), "activation_hash", now_ms, remote)
    if checked.account is None:
        return checked
    conn.execute(
        "UPDATE web_accounts SET password_hash = ?, activation_hash = NULL, activation_expires_ms = NULL, "
        "must_change = 0, password_changed_at_ms = ? WHERE id = ?",
        (hash_secret(password), now_ms, row["id"]),
    )
    record_event(conn, now_ms, row["login"], "activated", row["id"], remote)
    return LoginResult(get_account(conn, row["id"]))
