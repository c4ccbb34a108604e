"""Terminal provisioning, secrets and status (watermarks) on the server.

A terminal is provisioned for one canteen and receives its id and a 32-byte secret once;
the server keeps the secret to verify the terminal's HMAC signatures and to sign the acks
it sends back. Status heartbeats update ``watermark_ms`` — "this terminal has no unsent
sale before T" — which settlement and year-end clearing use to know they are complete.

A terminal's id is its broker user name and its client id (``server.registry.broker_users``):
letters, digits, ``-`` and ``_`` only, and never ``server``. :func:`revoke` takes a terminal
off the broker's password and ACL files and records when (:func:`revoked_at`): from then on
the server refuses the terminal's signed HTTP requests (401 ``terminal_revoked``) and every
sale it signs that is dated at or after that moment (rejected ``terminal_revoked``, nothing
applied). Its sales dated *before* the revocation are applied as usual — plausibility checks
included — because the terminal was honest until then and may still have had them in its
outbox. (A thief who backdates sales before the revocation is not stopped by it, only by the
plausibility checks and the quarantine: revoke as soon as a key is in doubt.) Each status
carries the sending process's random ``instance``: :func:`record_status` notices two
processes running one terminal's identity (an instance seen again after another one) and
keeps it for ``report terminals``.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from server.infra.db import chunks, get_setting, set_setting
from server.infra.terminal_keys import accepted_secrets
from shared.errors import DomainError
from shared.protocol import Status
from shared.protocol.codec import check_terminal_id
from shared.protocol.envelope import SERVER_SENDER

log = logging.getLogger(__name__)

# instances of one terminal remembered this long (by the terminals' send times)
INSTANCE_WINDOW_MS = 10 * 60_000
_INSTANCES_KEY = "terminal_instances:"
_DUPLICATE_KEY = "terminal_duplicate:"
_REVOKED_KEY = "terminal_revoked_at:"  # + id → when it was revoked (ms); the state says 'revoked'


@dataclass(frozen=True)
class TerminalCredentials:
    terminal_id: str
    canteen_id: str
    secret_hex: str
    server_public_key: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def check_new_terminal_id(terminal_id: str) -> None:
    """A terminal id is its broker user name, client id and a topic level: the protocol's one
    rule (``shared.protocol.codec.TERMINAL_ID``, ``bad_terminal_id``), and not the server's name."""
    if check_terminal_id(terminal_id) == SERVER_SENDER:
        raise DomainError("bad_terminal_id", "terminal id 'server' is the server's own name")


def next_terminal_id(conn: sqlite3.Connection) -> str:
    """The next free ``T####``, counting terminals and the ids enrolment codes reserve."""
    taken = {r[0] for r in conn.execute("SELECT id FROM terminals UNION SELECT terminal_id FROM enrolments")}
    n = len(taken) + 1
    while f"T{n:04d}" in taken:
        n += 1
    return f"T{n:04d}"


def new_terminal_id(conn: sqlite3.Connection, canteen_id: str, terminal_id: str | None) -> str:
    """The id of a new terminal of ``canteen_id`` (which must exist): ``terminal_id`` once
    checked, or :func:`next_terminal_id`. Whether a given id is free is the caller's check."""
    if conn.execute("SELECT 1 FROM canteens WHERE id = ?", (canteen_id,)).fetchone() is None:
        raise DomainError("unknown_canteen", canteen_id)
    if terminal_id is None:
        return next_terminal_id(conn)
    check_new_terminal_id(terminal_id)
    return terminal_id


def provision(
    conn: sqlite3.Connection,
    canteen_id: str,
    now_ms: int,
    server_public_key: str,
    terminal_id: str | None = None,
) -> TerminalCredentials:
    """Register a terminal for a canteen; call inside a write txn."""
    terminal_id = new_terminal_id(conn, canteen_id, terminal_id)
    if conn.execute("SELECT 1 FROM terminals WHERE id = ?", (terminal_id,)).fetchone():
        raise DomainError("already_exists", f"terminal {terminal_id}")
    secret_hex = secrets.token_hex(32)
    conn.execute(
        "INSERT INTO terminals(id, canteen_id, secret_hex, created_at_ms) VALUES (?, ?, ?, ?)",
        (terminal_id, canteen_id, secret_hex, now_ms),
    )
    return TerminalCredentials(terminal_id, canteen_id, secret_hex, server_public_key)


KEYS_VERSION = "terminal_keys_version"  # bumped when a terminal's keys change (rotation)
# its value (NULL: never bumped) as a trusted SQL column, for a query that reads it with others
KEYS_VERSION_SQL = f"(SELECT value FROM settings WHERE key = '{KEYS_VERSION}')"


def bump_keys_version(conn: sqlite3.Connection) -> None:
    """Tell every process caching terminal keys (:class:`SecretBook`) to read them again."""
    set_setting(conn, KEYS_VERSION, str(int(get_setting(conn, KEYS_VERSION) or "0") + 1))


@dataclass(frozen=True)
class _Keys:
    secret_hex: str
    canteen_id: str
    next_secret_hex: str | None
    previous_secret_hex: str | None
    previous_until_ms: int | None


class SecretBook:
    """Terminal secrets and canteens, cached; a miss re-reads the table (new terminals), and
    :meth:`refresh` drops the cache when another process changed a terminal's keys."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._cache: dict[str, _Keys] = {}
        self._version: str | None = None

    def refresh(self) -> None:
        """Read the keys' version: a rotation elsewhere empties the cache."""
        version = get_setting(self._conn, KEYS_VERSION)
        with self._lock:
            if version != self._version:
                self._cache.clear()
                self._version = version

    def holds(self, version: str | None) -> bool:
        """Whether the cache is of the keys at this version (:data:`KEYS_VERSION_SQL`, read
        by the caller); if not, :meth:`refresh` before trusting it."""
        with self._lock:
            return version == self._version

    def _load(self, terminal_id: str) -> _Keys | None:
        with self._lock:
            hit = self._cache.get(terminal_id)
            if hit is not None:
                return hit
            row = self._conn.execute(
                "SELECT secret_hex, canteen_id, next_secret_hex, previous_secret_hex, previous_until_ms "
                "FROM terminals WHERE id = ?",
                (terminal_id,),
            ).fetchone()
            if row is None:
                return None
            self._cache[terminal_id] = _Keys(*row)
            return self._cache[terminal_id]

    def secret(self, terminal_id: str) -> bytes | None:
        """The current key (what the server signs its acks with)."""
        hit = self._load(terminal_id)
        return bytes.fromhex(hit.secret_hex) if hit else None

    def keys(self, terminal_id: str, now_ms: int) -> list[tuple[str, bytes]]:
        """Every key a message from this terminal may be signed with now, current first
        (:func:`server.infra.terminal_keys.accepted_secrets`)."""
        hit = self._load(terminal_id)
        if hit is None:
            return []
        return accepted_secrets(
            hit.secret_hex, hit.next_secret_hex, hit.previous_secret_hex, hit.previous_until_ms, now_ms
        )

    def rotation_pending(self, terminal_id: str) -> bool:
        hit = self._load(terminal_id)
        return hit is not None and hit.next_secret_hex is not None

    def canteen(self, terminal_id: str) -> str | None:
        hit = self._load(terminal_id)
        return hit.canteen_id if hit else None


def revoke(conn: sqlite3.Connection, terminal_id: str, now_ms: int) -> None:
    """Take a terminal out of service at ``now_ms`` (call inside a write txn); then rewrite the
    broker's files (``broker_users.write_broker_files``) and reload the broker. Ingest and the
    signed HTTP endpoints read the revocation on every message and request, so it holds at once."""
    row = conn.execute("SELECT state FROM terminals WHERE id = ?", (terminal_id,)).fetchone()
    if row is None:
        raise DomainError("unknown_terminal", terminal_id)
    if row[0] == "revoked":
        raise DomainError("terminal_revoked", f"{terminal_id} is already revoked")
    conn.execute("UPDATE terminals SET state = 'revoked' WHERE id = ?", (terminal_id,))
    set_setting(conn, _REVOKED_KEY + terminal_id, str(now_ms))


def revoked_at(conn: sqlite3.Connection, terminal_id: str) -> int | None:
    """When a terminal was revoked (ms), or None while it is in service. A terminal revoked
    before the time was recorded counts as revoked since 0: nothing it signs is accepted."""
    return revocations(conn, [terminal_id])[terminal_id]


def revocations(conn: sqlite3.Connection, terminal_ids: Iterable[str]) -> dict[str, int | None]:
    """:func:`revoked_at` of several terminals in one query per 400 (an unknown one: None)."""
    return {t: row[0] if row else None for t, row in revocations_with(conn, terminal_ids, ()).items()}


def revocations_with(
    conn: sqlite3.Connection, terminal_ids: Iterable[str], columns: Sequence[str]
) -> dict[str, tuple[Any, ...] | None]:
    """:func:`revocations`, and in the same query what ``columns`` (trusted SQL over the
    terminal row ``t``) say of each terminal: (revoked_at, *columns) per terminal, None for
    an unknown one. The ingest worker reads each transaction's terminals once this way (on
    PostgreSQL every query is a round trip)."""
    ids = sorted(set(terminal_ids))
    out: dict[str, tuple[Any, ...] | None] = dict.fromkeys(ids)
    extra = "".join(f", {c}" for c in columns)
    for chunk in chunks(ids):
        marks = ", ".join("?" * len(chunk))
        for terminal_id, state, value, *rest in conn.execute(
            f"SELECT t.id, t.state, s.value{extra} FROM terminals t "
            f"LEFT JOIN settings s ON s.key = ? || t.id WHERE t.id IN ({marks})",
            (_REVOKED_KEY, *chunk),
        ):
            revoked = (int(value) if value is not None else 0) if state == "revoked" else None
            out[terminal_id] = (revoked, *rest)
    return out


def note_instance(conn: sqlite3.Connection, terminal_id: str, instance: str, sent_at_ms: int) -> bool:
    """Remember which process sent a terminal's status; True when two processes run one
    terminal identity: an instance seen again after another one was (a restart never comes
    back to an old instance id). Logged at WARNING and kept for ``report terminals``."""
    if not instance:
        return False
    return _note_instance(
        conn, terminal_id, instance, sent_at_ms, get_setting(conn, _INSTANCES_KEY + terminal_id)
    )


def _note_instance(
    conn: sqlite3.Connection, terminal_id: str, instance: str, sent_at_ms: int, stored: str | None
) -> bool:
    """:func:`note_instance` with the instances stored for the terminal already read."""
    key = _INSTANCES_KEY + terminal_id
    seen: list[list[Any]] = json.loads(stored or "[]")  # [instance, last ms], oldest first
    seen = [e for e in seen if e[1] >= sent_at_ms - INSTANCE_WINDOW_MS]
    positions = [i for i, e in enumerate(seen) if e[0] == instance]
    duplicate = bool(positions) and positions[-1] != len(seen) - 1
    seen = [e for e in seen if e[0] != instance] + [[instance, sent_at_ms]]
    set_setting(conn, key, json.dumps(seen[-8:]))
    if duplicate:
        log.warning(
            "terminal_identity_duplicate: terminal %s runs as two processes at once (instances %s)",
            terminal_id,
            ", ".join(e[0] for e in seen[-8:]),
        )
        set_setting(
            conn,
            _DUPLICATE_KEY + terminal_id,
            json.dumps({"instances": sorted({e[0] for e in seen[-8:]}), "at_ms": sent_at_ms}),
        )
    return duplicate


def duplicates(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Terminals seen running as two processes at once: id → {instances, at_ms} (the last time)."""
    return {
        r[0][len(_DUPLICATE_KEY) :]: json.loads(r[1])
        for r in conn.execute(
            "SELECT key, value FROM settings WHERE key >= ? AND key < ? ORDER BY key",
            (_DUPLICATE_KEY, _DUPLICATE_KEY[:-1] + ";"),
        )
    }


def fleet(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every terminal: canteen, state, last heartbeat, watermark, and a duplicate identity seen."""
    dup = duplicates(conn)
    out = []
    for r in conn.execute(
        "SELECT id, canteen_id, state, last_status_ms, watermark_ms, last_status_json "
        "FROM terminals ORDER BY id"
    ):
        status = json.loads(r[5]) if r[5] else {}
        out.append(
            {
                "terminal_id": r[0],
                "canteen_id": r[1],
                "state": r[2],
                "last_status_ms": r[3],
                "watermark_ms": r[4],
                "pending": status.get("pending"),
                "instance": status.get("instance") or None,
                "duplicate_identity": dup.get(r[0]),
            }
        )
    return out


# what :func:`record_status` reads of a terminal ``t``: trusted SQL, also for the columns of
# :func:`revocations_with` (the ingest worker reads its terminals' rows once per transaction)
STATUS_COLUMNS = (
    "t.last_status_ms",
    "t.watermark_ms",
    "t.state",
    "t.state_since_ms",
    f"(SELECT value FROM settings WHERE key = '{_INSTANCES_KEY}' || t.id)",
)


def record_status(
    conn: sqlite3.Connection,
    terminal_id: str,
    status: Status,
    sent_at_ms: int,
    received_at_ms: int | None = None,
) -> bool:
    """Store a heartbeat unless an newer one is already stored. The watermark only rises.
    ``received_at_ms`` (the server's clock) is when it arrived: the fleet view counts a
    terminal's online/offline time from the arrival that changed its state."""
    # the terminal's row and the instances it was seen as, in one query (a round trip each
    # on PostgreSQL, and the ingest worker stores a status in nearly every transaction)
    row = conn.execute(
        f"SELECT {', '.join(STATUS_COLUMNS)} FROM terminals t WHERE t.id = ?", (terminal_id,)
    ).fetchone()
    return record_status_read(conn, terminal_id, status, sent_at_ms, received_at_ms, row)


def record_status_read(
    conn: sqlite3.Connection,
    terminal_id: str,
    status: Status,
    sent_at_ms: int,
    received_at_ms: int | None,
    row: Sequence[Any] | None,
) -> bool:
    """:func:`record_status` with the terminal's :data:`STATUS_COLUMNS` already read in this
    transaction (None: no such terminal), and not changed since."""
    if row is None or row[2] == "revoked":
        return False
    if status.instance:
        _note_instance(conn, terminal_id, status.instance, sent_at_ms, row[4])
    if row[0] is not None and sent_at_ms < row[0]:
        return False
    watermark = row[1]
    if status.watermark_ms is not None and (watermark is None or status.watermark_ms > watermark):
        watermark = status.watermark_ms
    arrived = received_at_ms if received_at_ms is not None else sent_at_ms
    since = row[3] if row[2] == status.state and row[3] is not None else arrived
    body = status.to_body()
    if status.watermark_ms is None:
        # a last will (composed when the terminal connected, with no watermark): it says
        # "offline" and nothing else true — the last full status's facts (unsent sales,
        # the oldest one, disk …) stay what the fleet view shows
        previous = conn.execute(
            "SELECT last_status_json FROM terminals WHERE id = ?", (terminal_id,)
        ).fetchone()[0]
        if previous:
            body = {**json.loads(previous), "state": status.state, "instance": status.instance}
    conn.execute(
        "UPDATE terminals SET last_status_json = ?, last_status_ms = ?, watermark_ms = ?, "
        "state = ?, state_since_ms = ?, last_seen_ms = ? WHERE id = ?",
        (json.dumps(body), sent_at_ms, watermark, status.state, since, arrived, terminal_id),
    )
    return True


def laggards(conn: sqlite3.Connection, cutoff_ms: int) -> list[dict[str, object]]:
    """Terminals whose watermark has not passed ``cutoff_ms``: they may still hold sales."""
    return [
        {"terminal_id": r[0], "canteen_id": r[1], "watermark_ms": r[2], "state": r[3]}
        for r in conn.execute(
            "SELECT id, canteen_id, watermark_ms, state FROM terminals "
            "WHERE watermark_ms IS NULL OR watermark_ms < ? ORDER BY id",
            (cutoff_ms,),
        )
    ]
