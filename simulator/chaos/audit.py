"""The chaos run's audit, from outside: terminal journals and events against the server.

After the drain, with every process stopped, :func:`audit` reads what each terminal
journaled and told its diners (``approved``/``recovered`` events) and what the server's
database holds (sales, ledger txns, purse balances, refusals), and counts:

* ``approved`` — sales journaled by the terminals (each was announced "paid");
* ``applied`` — sales the server applied;
* ``lost`` — approved, but not applied (missing at the server, or rejected there);
* ``double_applied`` — sales with more than one ledger txn, or one uuid applied twice;
* ``ledger_sum_fen`` — the sum over all accounts (0 in a double-entry ledger);
* ``overdraft_fen`` — the purses' negative balances, summed;
* ``overdraft_bound_fen`` — what the limits allow (below);
* ``compromised_sent`` — implausible sales signed with a real terminal's stolen key
  (:mod:`simulator.chaos.inject`); ``quarantined`` — how many of them the server holds in
  ``quarantined_sales``, pending, with a reason (each must be); ``quarantined_applied`` —
  how many of them moved money anyway: applied, accepted, or a ledger txn for the sale
  (must be 0); ``honest_quarantined`` — quarantined sales that no thief sent (must be 0);
* ``reversals_approved`` — reversals (冲正) the terminals journaled (each shown to the
  operator); ``reversals_applied`` — reversals the server applied; ``reversals_lost`` —
  journaled but not applied; ``reversals_doubled`` — a sale given back more than once, or
  a reversal posted twice (both must be 0);
* ``purse_mismatch`` (a violation) — a purse whose change over the run is not its holder's
  applied sales less their applied reversals: money moved by something that was neither;
* ``violations`` — each broken rule, with a code and a detail.

**The overdraft bound.** A terminal approves a sale for a cardholder only if the amount
fits the balance it last heard from the server (delta or ack, at some version ``v``) minus
its own sales still unacknowledged, plus the offline allowance ``a`` when offline
(``terminal.authorize``). Its own sales the server had not applied at ``v`` are all still
unacknowledged, so at its last approval everything terminal ``j`` ever sold to the holder
is at most ``B − (others' sales applied by v) + a``, where ``B`` is the holder's balance
before the run (no top-ups during it). Summing over the ``n`` terminals that sold to the
holder, and subtracting ``B``: the holder's overdraft is at most ``(n − 1) × (B + a) + a``.
``max_offline_total_fen`` does not enter: between a fault and the terminal noticing it —
up to ``ack_timeout_s`` on a half-open link, until the broker delivers a killed server's
will (``server.presence``) — a terminal still uses its online limit, the balance it last
saw, so the provable bound stays the one above; the offline caps cut what happens after.
With one terminal the bound is ``a``: a single terminal never overdraws further.
The step it rests on is checked too, per terminal and holder (``terminal_oversold``): no
terminal sold a holder more than ``B + a`` in the whole run.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from server.books import ledger
from server.closing.check import all_violations
from server.infra.schema import REVERSAL_PURSE_PAID
from shared.errors import CATALOG

MISDATE_SLACK_MS = 10_000  # process scheduling, event pipes: far below any skew we inject


@dataclass(frozen=True)
class JournalRow:
    terminal_id: str
    seq: int
    uuid: str
    holder_id: str | None
    amount_fen: int
    occurred_at_ms: int
    offline: bool


@dataclass(frozen=True)
class ReversalRow:
    terminal_id: str
    seq: int
    uuid: str
    sale_seq: int
    holder_id: str | None
    amount_fen: int


def _read_only(path: str) -> sqlite3.Connection:
    """A terminal's database, read-only: a file, or already a URI (``canteen-sim vopr``'s
    in-memory databases, :mod:`simulator.vopr.disk`)."""
    if path.startswith("file:"):
        return sqlite3.connect(f"{path}&mode=ro" if "?" in path else f"{path}?mode=ro", uri=True)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _read_terminal(path: str, select: str, outbox: str) -> tuple[list[tuple[Any, ...]], int]:
    """The rows of ``select`` from a terminal's database and the size of its ``outbox``
    table, read-only."""
    conn = _read_only(path)
    try:
        rows = conn.execute(select).fetchall()
        pending = int(conn.execute(f"SELECT count(*) FROM {outbox}").fetchone()[0])
    finally:
        conn.close()
    return rows, pending


def read_reversals(path: str, terminal_id: str) -> tuple[list[ReversalRow], int]:
    """A terminal's reversals and its reversal outbox size, read-only."""
    rows, pending = _read_terminal(
        path,
        "SELECT seq, uuid, sale_seq, holder_id, amount_fen FROM reversals ORDER BY seq",
        "reversal_outbox",
    )
    return [ReversalRow(terminal_id, *r) for r in rows], pending


def read_journal(path: str, terminal_id: str) -> tuple[list[JournalRow], int]:
    """A terminal's journal and its outbox size, read-only."""
    rows, pending = _read_terminal(
        path,
        "SELECT seq, uuid, holder_id, amount_fen, occurred_at_ms, offline FROM journal ORDER BY seq",
        "outbox",
    )
    return [JournalRow(terminal_id, r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows], pending


@dataclass
class AuditResult:
    approved: int = 0
    applied: int = 0
    lost: int = 0
    double_applied: int = 0
    ledger_sum_fen: int = 0
    overdraft_fen: int = 0
    overdraft_bound_fen: int = 0
    pending: int = 0
    offline_sales: int = 0
    sales_fen: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    compromised_sent: int = 0
    quarantined: int = 0
    quarantined_applied: int = 0
    honest_quarantined: int = 0
    reversals_approved: int = 0
    reversals_applied: int = 0
    reversals_lost: int = 0
    reversals_doubled: int = 0
    violations: list[dict[str, str]] = field(default_factory=list)

    def violate(self, code: str, detail: str) -> None:
        self.violations.append({"code": code, "detail": detail})

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.double_applied == 0
            and self.ledger_sum_fen == 0
            and self.overdraft_fen <= self.overdraft_bound_fen
            and self.quarantined == self.compromised_sent
            and self.quarantined_applied == 0
            and self.honest_quarantined == 0
            and self.reversals_lost == 0
            and self.reversals_doubled == 0
            and not self.violations
        )

    def to_json(self) -> dict[str, Any]:
        """Every count in field order; the first 50 violations and how many there were."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["violations"] = self.violations[:50]
        out["violation_count"] = len(self.violations)
        return out


def audit(
    server: sqlite3.Connection,
    journals: dict[str, list[JournalRow]],
    events: dict[str, list[dict[str, Any]]],
    *,
    pending: dict[str, int],
    start_balance_fen: dict[str, int],
    offline_allowance_fen: int,
    max_clock_offset_ms: int,
    compromised: Iterable[tuple[str, int, str]] = (),
    reversals: dict[str, list[ReversalRow]] | None = None,
    credited_fen: dict[str, int] | None = None,
    cleared_fen: dict[str, int] | None = None,
) -> AuditResult:
    """``compromised``: (terminal id, seq, uuid) of every implausible sale a stolen key
    signed; ``reversals``: each terminal's journaled reversals (its pending ones are in
    ``pending`` with its sales).
    ``credited_fen`` / ``cleared_fen``: per holder, what came into the purses during the run
    (top-ups, allocations) and what the year-end clearing took out of them, for a run that
    has those (the deterministic simulator's): the purses must have moved by exactly them and
    the sales, and the overdraft bound counts every fen that was ever there to see."""
    r = AuditResult()
    rows = [j for js in journals.values() for j in js]
    r.approved = len(rows)
    r.offline_sales = sum(j.offline for j in rows)
    r.pending = sum(pending.values())
    for tid, n in sorted(pending.items()):
        if n:
            r.violate("not_drained", f"{tid}: {n} sales still unacknowledged after the drain")
    _check_announcements(r, journals, events, max_clock_offset_ms)

    sales = server.execute("SELECT uuid, terminal_id, seq, status, amount_fen, reason FROM sales").fetchall()
    by_uuid: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for s in sales:
        by_uuid[s[0]].append(tuple(s))
    applied = [s for s in sales if s[3] == "applied"]
    r.applied = len(applied)
    r.sales_fen = sum(s[4] for s in applied)
    approved_uuids = {j.uuid for j in rows}
    for j in rows:
        at_server = [s for s in by_uuid.get(j.uuid, []) if s[3] == "applied"]
        if not at_server:
            r.lost += 1
            why = by_uuid[j.uuid][0][5] if by_uuid.get(j.uuid) else "never arrived"
            r.violate("lost", f"{j.terminal_id}/{j.seq} {j.amount_fen} fen: {why}")
        elif any(s[1] != j.terminal_id or s[2] != j.seq or s[4] != j.amount_fen for s in at_server):
            r.violate("differs", f"{j.terminal_id}/{j.seq}: the server's record differs from the journal")
    for u, ss in by_uuid.items():
        if sum(s[3] == "applied" for s in ss) > 1:
            r.double_applied += 1
        if u not in approved_uuids and any(s[3] == "applied" for s in ss):
            r.violate("applied_not_approved", f"{ss[0][1]}/{ss[0][2]} applied, but no terminal journaled it")
    twice = server.execute(
        "SELECT count(*) FROM (SELECT ref FROM txns WHERE kind = 'sale' GROUP BY ref HAVING count(*) > 1)"
    ).fetchone()[0]
    r.double_applied += int(twice)
    if r.double_applied:
        r.violate("double_applied", f"{r.double_applied} sales applied more than once")

    _reversals(r, server, [x for xs in (reversals or {}).values() for x in xs], events)
    r.ledger_sum_fen = ledger.ledger_sum(server)
    for v in all_violations(server):
        r.violate(f"ledger:{v.code}", v.detail)
    given_back = Counter(
        {
            (t, h): fen
            for t, h, fen in server.execute(
                "SELECT terminal_id, holder_id, sum(amount_fen) FROM reversals WHERE status = 'applied' "
                "AND holder_id IS NOT NULL GROUP BY terminal_id, holder_id"
            )
        }
    )
    credited, cleared = credited_fen or {}, cleared_fen or {}
    seen = {h: fen + credited.get(h, 0) for h, fen in start_balance_fen.items()}
    _overdraft(r, server, rows, seen, offline_allowance_fen, given_back)
    _purses(r, server, start_balance_fen, credited, cleared)
    _quarantine(r, server, list(compromised))
    r.rejections = {
        reason: n
        for reason, n in server.execute(
            "SELECT reason, count(*) FROM rejections GROUP BY reason ORDER BY reason"
        )
    }
    for reason in r.rejections:
        if reason not in CATALOG:
            r.violate("rejection_without_code", f"refusal reason {reason!r} is not a defined code")
    return r


def _check_announcements(
    r: AuditResult,
    journals: dict[str, list[JournalRow]],
    events: dict[str, list[dict[str, Any]]],
    max_offset_ms: int,
) -> None:
    """Every journaled sale was announced, every announced sale journaled, none misdated."""
    for tid, rows in journals.items():
        evs = events.get(tid, [])
        told = {e["uuid"]: e for e in evs if e.get("event") in ("approved", "recovered")}
        journaled = {j.uuid: j for j in rows}
        for u in told.keys() - journaled.keys():
            r.violate("announced_not_journaled", f"{tid}: diner told 'paid' for {u}, not in the journal")
        for u in journaled.keys() - told.keys():
            r.violate("journaled_not_announced", f"{tid}/{journaled[u].seq}: journaled, diner never told")
        for e in evs:
            if e.get("event") == "garbage":
                r.violate("torn_event", f"{tid}: {e.get('line', '')[:80]!r}")
            if e.get("event") == "approved" and e["uuid"] in journaled and "_seen_ms" in e:
                off = journaled[e["uuid"]].occurred_at_ms - e["_seen_ms"]
                if abs(off) > max_offset_ms + MISDATE_SLACK_MS:
                    r.violate(
                        "misdated",
                        f"{tid}/{journaled[e['uuid']].seq}: dated {off / 1000:+.0f} s from the true time",
                    )


def _overdraft(
    r: AuditResult,
    server: sqlite3.Connection,
    rows: list[JournalRow],
    start: dict[str, int],
    allowance: int,
    given_back: Counter[tuple[str, str]],
) -> None:
    sellers: dict[str, set[str]] = defaultdict(set)
    sold: Counter[tuple[str, str]] = Counter()
    for j in rows:
        if j.holder_id:
            sellers[j.holder_id].add(j.terminal_id)
            sold[(j.terminal_id, j.holder_id)] += j.amount_fen
    sold.subtract(given_back)  # what a terminal reversed, it no longer sold
    for (tid, h), fen in sorted(sold.items()):
        # the step the bound rests on: one terminal never sells a holder more than the
        # balance it could have seen plus the allowance
        if fen > max(start.get(h, 0), 0) + allowance:
            r.violate(
                "terminal_oversold",
                f"{tid} sold {h} {fen} fen; balance {start.get(h, 0)} + allowance {allowance}",
            )
    purses = ledger.balances(server, [ledger.self_purse(h) for h in start])
    per_holder: Counter[str] = Counter()
    for h in start:
        subsidy = ledger.subsidy_by_year(server, h).values()
        per_holder[h] = sum(max(0, -fen) for fen in subsidy) + max(0, -purses[ledger.self_purse(h)])
    r.overdraft_fen = sum(per_holder.values())
    for h, terms in sellers.items():
        n = len(terms)
        bound = (n - 1) * (max(start.get(h, 0), 0) + allowance) + allowance
        r.overdraft_bound_fen += bound
        if per_holder[h] > bound:
            r.violate(
                "overdraft_beyond_bound",
                f"{h}: {per_holder[h]} fen overdrawn, limits allow {bound} ({n} terminals)",
            )


def _purses(
    r: AuditResult,
    server: sqlite3.Connection,
    start: dict[str, int],
    credited: dict[str, int],
    cleared: dict[str, int],
) -> None:
    """No money moved in a purse but by the sales applied to its holder, and by the credits
    and clearings the run made (a chaos run makes none). What a late sale took back from a
    year-end refund (``cleared_subsidy_fen``) did not come out of a purse."""
    spent = dict(
        server.execute(
            "SELECT holder_id, sum(amount_fen - cleared_subsidy_fen) FROM sales "
            "WHERE status = 'applied' AND holder_id IS NOT NULL GROUP BY holder_id"
        ).fetchall()
    )
    for h, fen in server.execute(
        f"SELECT holder_id, sum(amount_fen) FROM reversals WHERE {REVERSAL_PURSE_PAID} GROUP BY holder_id"
    ):
        spent[h] = spent.get(h, 0) - fen
    purses = ledger.balances(server, [ledger.self_purse(h) for h in start])
    for h, before in sorted(start.items()):
        now = sum(ledger.subsidy_by_year(server, h).values()) + purses[ledger.self_purse(h)]
        moved = credited.get(h, 0) - cleared.get(h, 0)
        if before + moved - now != spent.get(h, 0):
            r.violate(
                "purse_mismatch",
                f"{h}: purses went from {before} to {now} fen with {moved:+} credited and cleared, "
                f"applied sales {spent.get(h, 0)} fen",
            )


def _reversals(
    r: AuditResult,
    server: sqlite3.Connection,
    journaled: list[ReversalRow],
    events: dict[str, list[dict[str, Any]]],
) -> None:
    """Every reversal a terminal journaled was shown and applied once; none applied that no
    terminal journaled; no sale given back twice."""
    rows = server.execute(
        "SELECT uuid, terminal_id, seq, sale_seq, amount_fen, status, reason FROM reversals"
    )
    at_server = {row[0]: row for row in rows}
    r.reversals_approved = len(journaled)
    r.reversals_applied = sum(1 for row in at_server.values() if row[5] == "applied")
    told = {e["uuid"] for evs in events.values() for e in evs if e.get("event") == "reversed"}
    for j in journaled:
        got = at_server.get(j.uuid)
        if got is None or got[5] != "applied":
            r.reversals_lost += 1
            why = "never arrived" if got is None else f"{got[5]} {got[6]}"
            r.violate("reversal_lost", f"{j.terminal_id}/R{j.seq} of sale {j.sale_seq}: {why}")
        elif (got[1], got[2], got[3], got[4]) != (j.terminal_id, j.seq, j.sale_seq, j.amount_fen):
            r.violate("reversal_differs", f"{j.terminal_id}/R{j.seq}: the server's record differs")
        if j.uuid not in told:
            r.violate(
                "reversal_not_announced", f"{j.terminal_id}/R{j.seq}: journaled, the operator never told"
            )
    known = {j.uuid for j in journaled}
    for u, row in at_server.items():
        if row[5] == "applied" and u not in known:
            r.violate("reversal_not_journaled", f"{row[1]}/R{row[2]} applied, but no terminal journaled it")
    twice = server.execute(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM reversals WHERE status = 'applied' "
        "GROUP BY terminal_id, sale_seq HAVING count(*) > 1)) + (SELECT count(*) FROM (SELECT 1 FROM txns "
        "WHERE kind = 'reversal' GROUP BY ref HAVING count(*) > 1))"
    ).fetchone()[0]
    r.reversals_doubled = int(twice)
    if twice:
        r.violate("reversal_doubled", f"{twice} sales given back more than once")


def _quarantine(r: AuditResult, server: sqlite3.Connection, compromised: list[tuple[str, int, str]]) -> None:
    """Every compromised sale held (pending, with a reason) and none applied; nothing else held."""
    held = {
        (row[0], row[1]): (row[2], row[3])
        for row in server.execute("SELECT terminal_id, seq, reason, state FROM quarantined_sales")
    }
    keys = {(tid, seq) for tid, seq, _ in compromised}
    r.compromised_sent = len(compromised)
    for tid, seq, u in compromised:
        sale = server.execute(
            "SELECT uuid, status FROM sales WHERE terminal_id = ? AND seq = ?", (tid, seq)
        ).fetchone()
        txn = server.execute(
            "SELECT 1 FROM txns WHERE kind = 'sale' AND ref = ? LIMIT 1", (f"{tid}/{seq}",)
        ).fetchone()
        reason, state = held.get((tid, seq), (None, None))
        if txn is not None or state == "accepted" or (sale is not None and sale[1] == "applied"):
            r.quarantined_applied += 1
            r.violate("compromised_applied", f"{tid}/{seq}: an implausible sale moved money ({state})")
        elif sale is not None and sale[0] == u and state == "pending" and reason:
            r.quarantined += 1
        else:
            why = "never arrived" if sale is None else f"{sale[1]} {state or 'not quarantined'}"
            r.violate("compromised_not_quarantined", f"{tid}/{seq}: {why}")
    for (tid, seq), (reason, _) in sorted(held.items()):
        if (tid, seq) not in keys:
            r.honest_quarantined += 1
            r.violate("honest_quarantined", f"{tid}/{seq} held as {reason}, but no thief sent it")
