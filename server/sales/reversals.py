"""Applying reversals (冲正) to the ledger, each at most once, never editing the sale.

A reversal is identified like a sale by ``(terminal_id, seq)`` and a ``uuid``, and names
the sale it reverses: ``(terminal_id, sale_seq)`` with that sale's uuid — a sale is reversed
at the terminal where it was made. The first time the server sees it, it decides and stores
the decision in ``reversals``; a copy gets that decision back as ``duplicate``.

* **Its sale is not here yet** (the terminal's sale batch was refused whole, lost, or came
  later): the reversal is kept ``pending`` and applied in the transaction that applies its
  sale (:meth:`ReversalApplier.apply_waiting`); its terminal is told then, unasked.
* **Checks** (the server trusts no number from a terminal): the sale's uuid, amount and
  method are the reversal's; the sale is not reversed already (``sale_already_reversed``; a
  partial unique index makes it impossible twice); the reversal lies within the canteen's
  window after the sale and on its business day (:func:`shared.reversal_rules.window_refusal`,
  with the config in force then), is not dated in the future, and — made offline — stays
  within the terminal's offline reversals of that day (:func:`shared.reversal_rules.offline_refusal`).
  A failure is ``rejected`` with the code; nothing moves.
* **Money.** A purse-paid sale's entries are mirrored exactly: each amount goes back from the
  canteen's payable to the account that paid it — the subsidy purse *of the sale's year*,
  the self purse, or the year-end refund a late sale had clawed back from (its clearing
  lines are given back). Nothing reaches a purse that did not pay. If the sale's subsidy year
  has been cleared since, its subsidy part goes where the clearing sent that year's subsidy
  (the refund of the holder's unit, or city finance) in a txn of its own
  (``reversal_clearing``), not back into a purse nobody may spend. A digital RMB sale moves no
  purse: the terminal refunded it through the gateway, recorded here as an e-CNY refund.
* **Quarantined sale**: reversing it resolves the hold (rejected, decided by the reversal);
  nothing had moved and nothing moves.
* **Periods.** A reversal lowers its canteen's gross in the quarter it is dated in (its
  sale's, the same business day). If that quarter is already settled, it is recorded in
  ``late_reversals`` and the next statement carries it as a negative adjustment line.

Like :class:`server.sales.apply.SaleApplier`, :class:`ReversalApplier` works inside the
ingest transaction that will record one delta version; results carry the holder's balance
as of the end of it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from server.books import ledger
from server.books.periods import year_of_ms
from server.downstream.changes import meals_of_day
from server.registry.holders import holder_change
from server.sales.apply import ClosedPeriods, record_late, stamp_balances, stored_balance
from server.sales.quarantine import resolve_by_reversal
from server.sales.sale_facts import FactsBook, config_at
from shared.clock import start_of_china_day_ms
from shared.protocol import Reversal, ReversalResult
from shared.reversal_rules import offline_refusal, window_ms, window_refusal

_COLUMNS = (
    "terminal_id",
    "seq",
    "uuid",
    "sale_seq",
    "sale_uuid",
    "canteen_id",
    "operator_card",
    "amount_fen",
    "method",
    "offline",
    "refund_no",
    "occurred_at_ms",
    "received_at_ms",
    "status",
    "reason",
    "holder_id",
    "unit_id",
    "subsidy_fen",
    "self_fen",
    "refunded_subsidy_fen",
    "txn_id",
    "applied_at_ms",
    "balance_subsidy_fen",
    "balance_self_fen",
    "balance_version",
    "balance_subsidy_year",
    "balance_next_subsidy_fen",
    "balance_expired_subsidy_fen",
    "reversal_json",
)
_UPSERT = (
    f"INSERT INTO reversals({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(terminal_id, seq) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in ("terminal_id", "seq"))
)


def result_of(row: dict[str, Any] | sqlite3.Row, status: str) -> ReversalResult:
    """The result a stored reversal row answers (``status``: its own, or ``duplicate``;
    a duplicate of a pending one says ``pending`` in its reason)."""
    reason = row["reason"]
    if status == "duplicate" and row["status"] == "pending":
        reason = "pending"
    return ReversalResult(
        terminal_id=row["terminal_id"],
        seq=row["seq"],
        uuid=row["uuid"],
        status=status,
        reason=reason,
        subsidy_fen=row["subsidy_fen"],
        self_fen=row["self_fen"],
        holder_id=row["holder_id"],
        balance=stored_balance(row),
    )


@dataclass
class _Decided:
    row: dict[str, Any]
    meal_ms: int | None = None  # the reversed sale was a meal at this time: recount the day


class ReversalApplier:
    """Decides reversals inside the caller's write txn; :meth:`finish` writes their rows."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        now_ms: int,
        version: int,
        accounts: ledger.AccountCache | None = None,
    ) -> None:
        self.conn = conn
        self.now_ms = now_ms
        self.version = version
        self.periods = ClosedPeriods.load(conn)
        self._accounts = accounts if accounts is not None else ledger.AccountCache()
        self._facts = FactsBook(conn, now_ms)
        self._rows: dict[tuple[str, int], _Decided] = {}
        self._uuids: set[str] = set()
        self._reversed: set[tuple[str, int]] = set()  # sales reversed (or waiting) in this txn
        self._offline_today: dict[tuple[str, int], list[int]] = {}  # (terminal, day start) -> [n, fen]
        self._results: list[ReversalResult | tuple[tuple[str, int], str]] = []
        self._late: list[tuple[str, int, str, int, int]] = []
        self._holders: set[str] = set()
        self.changes: dict[str, dict[str, Any]] = {}
        self.unasked: dict[str, list[tuple[str, int]]] = {}  # terminal -> waiting reversals now decided
        self.applied = self.duplicates = self.rejected = self.pending = 0
        self._finished = False

    # -- one reversal ---------------------------------------------------------------------

    def apply(self, r: Reversal, terminal_canteen: str, revoked_at_ms: int | None = None) -> int:
        """Decide one reversal; returns its slot in :meth:`finish`'s result list. A revoked
        terminal's reversal dated at or after its revocation is rejected ``terminal_revoked``."""
        slot = len(self._results)
        key = (r.terminal_id, r.seq)
        earlier = self._rows.get(key)
        if earlier is not None:
            same = earlier.row["uuid"] == r.uuid
            self._count("duplicate" if same else "rejected")
            self._results.append((key, "duplicate") if same else _refusal(r, "reversal_id_conflict"))
            return slot
        stored = self.conn.execute(
            "SELECT * FROM reversals WHERE (terminal_id = ? AND seq = ?) OR uuid = ?", (*key, r.uuid)
        ).fetchall()
        same_key = [s for s in stored if (s["terminal_id"], s["seq"]) == key]
        if same_key and same_key[0]["uuid"] == r.uuid:
            self._count("duplicate")
            self._results.append(result_of(same_key[0], "duplicate"))
            return slot
        if stored or r.uuid in self._uuids:
            self._count("rejected")
            self._results.append(_refusal(r, "reversal_id_conflict"))
            return slot
        row = _base_row(r, self.now_ms)
        if revoked_at_ms is not None and r.occurred_at_ms >= revoked_at_ms:
            decided = _Decided({**row, "status": "rejected", "reason": "terminal_revoked"})
        elif r.canteen_id != terminal_canteen:
            decided = _Decided({**row, "status": "rejected", "reason": "canteen_mismatch"})
        else:
            decided = self._decide(r, row)
        self._keep(key, decided, r.uuid)
        self._count(decided.row["status"])
        self._results.append((key, decided.row["status"]))
        return slot

    def apply_waiting(self, sale_keys: Iterable[tuple[str, int]]) -> None:
        """Decide the reversals kept waiting for these sales (just stored in this txn); their
        terminals are told unasked (:attr:`unasked`)."""
        wanted = set(sale_keys)
        if not wanted:
            return
        terminals = sorted({t for t, _ in wanted})
        marks = ", ".join("?" * len(terminals))
        rows = self.conn.execute(
            f"SELECT * FROM reversals WHERE status = 'pending' AND terminal_id IN ({marks})", terminals
        ).fetchall()
        for stored in rows:
            if (stored["terminal_id"], stored["sale_seq"]) not in wanted:
                continue
            r = Reversal.from_dict(json.loads(stored["reversal_json"]))
            key = (r.terminal_id, r.seq)
            if key in self._rows:
                continue
            decided = self._decide(r, {**dict(stored), "received_at_ms": stored["received_at_ms"]})
            self._keep(key, decided, r.uuid)
            self._count(decided.row["status"])
            self.pending -= 1  # it was counted pending when it came
            self.unasked.setdefault(r.terminal_id, []).append(key)

    def _keep(self, key: tuple[str, int], decided: _Decided, uuid: str) -> None:
        self._rows[key] = decided
        self._uuids.add(uuid)
        if decided.row["status"] in ("applied", "pending"):
            self._reversed.add((key[0], decided.row["sale_seq"]))

    def _decide(self, r: Reversal, row: dict[str, Any]) -> _Decided:
        """The reversal's row (applied, pending or rejected), its money moved if applied."""
        config, limits = config_at(self._facts, r.canteen_id, r.occurred_at_ms)
        if r.occurred_at_ms > self.now_ms + limits.max_clock_offset_ms:
            return _Decided({**row, "status": "rejected", "reason": "reversal_time_future"})
        sale = self.conn.execute(
            "SELECT * FROM sales WHERE terminal_id = ? AND seq = ?", (r.terminal_id, r.sale_seq)
        ).fetchone()
        if sale is None:
            if (r.terminal_id, r.sale_seq) in self._reversed or self._other_reversal(r):
                return _Decided({**row, "status": "rejected", "reason": "sale_already_reversed"})
            return _Decided({**row, "status": "pending", "reason": None})
        refusal = self._refusal(r, sale, config, limits)
        if refusal is not None:
            return _Decided({**row, "status": "rejected", "reason": refusal})
        row = {**row, "status": "applied", "reason": None, "applied_at_ms": self.now_ms}
        if sale["status"] != "applied":  # held for review (checked in _refusal): resolve it
            resolve_by_reversal(self.conn, r.terminal_id, r.sale_seq, self.now_ms, r.reversal_id)
            return _Decided(row)
        row.update(holder_id=sale["holder_id"], unit_id=sale["unit_id"])
        if sale["method"] == "ecny":
            self._note_ecny_refund(r)
            return _Decided(row)
        self._mirror(r, sale, row)
        if r.offline:
            counted = self._offline_today[(r.terminal_id, start_of_china_day_ms(r.occurred_at_ms))]
            counted[0] += 1
            counted[1] += r.amount_fen
        return _Decided(row, sale["occurred_at_ms"] if sale["kind"] == "meal" else None)

    def _refusal(self, r: Reversal, sale: sqlite3.Row, config: dict[str, Any], limits: Any) -> str | None:
        if sale["uuid"] != r.sale_uuid or sale["method"] != r.method:
            return "reversal_sale_mismatch"
        if sale["amount_fen"] != r.amount_fen:
            return "reversal_amount_mismatch"
        if (r.terminal_id, r.sale_seq) in self._reversed or self._other_reversal(r):
            return "sale_already_reversed"
        held = self.conn.execute(
            "SELECT occurred_at_ms, state FROM quarantined_sales WHERE terminal_id = ? AND seq = ?",
            (r.terminal_id, r.sale_seq),
        ).fetchone()
        if sale["status"] != "applied" and (held is None or held["state"] != "pending"):
            return "reversal_sale_not_applied"
        # the time the terminal gave the sale (an accepted held sale is re-dated when accepted)
        sale_ms = held["occurred_at_ms"] if held is not None else sale["occurred_at_ms"]
        refusal = window_refusal(sale_ms, r.occurred_at_ms, window_ms(config))
        if refusal is not None:
            return refusal
        if r.offline and sale["status"] == "applied" and sale["method"] != "ecny":
            day = start_of_china_day_ms(r.occurred_at_ms)
            counted = self._offline_today.get((r.terminal_id, day))
            if counted is None:
                n, fen = self.conn.execute(
                    "SELECT count(*), coalesce(sum(amount_fen), 0) FROM reversals WHERE terminal_id = ? "
                    "AND offline = 1 AND status = 'applied' AND occurred_at_ms >= ? AND occurred_at_ms < ?",
                    (r.terminal_id, day, day + 86_400_000),
                ).fetchone()
                counted = self._offline_today[(r.terminal_id, day)] = [int(n), int(fen)]
            return offline_refusal(counted[0], counted[1], r.amount_fen, limits)
        return None

    def _other_reversal(self, r: Reversal) -> bool:
        """Another reversal of the same sale is applied or waiting already."""
        return (
            self.conn.execute(
                "SELECT 1 FROM reversals WHERE terminal_id = ? AND sale_seq = ? AND status <> 'rejected' "
                "AND seq <> ?",
                (r.terminal_id, r.sale_seq, r.seq),
            ).fetchone()
            is not None
        )

    def _mirror(self, r: Reversal, sale: sqlite3.Row, row: dict[str, Any]) -> None:
        """Give back each amount the sale's entries moved, to the account that paid it."""
        payable = ledger.canteen_payable(sale["canteen_id"])
        year = year_of_ms(sale["occurred_at_ms"])
        subsidy = ledger.subsidy_purse(sale["holder_id"], year)
        cleared_year = self.conn.execute(
            "SELECT refund_to FROM clearings WHERE year >= ? ORDER BY year LIMIT 1", (year,)
        ).fetchone()
        moves: list[ledger.Move] = []
        to_refund: list[ledger.Move] = []
        for source, fen in self.conn.execute(
            "SELECT from_account, amount_fen FROM entries WHERE txn_id = ? ORDER BY id", (sale["txn_id"],)
        ).fetchall():
            if source == subsidy and cleared_year is not None:  # that year's subsidy went back already
                account = ledger.year_end_refund(cleared_year[0], sale["unit_id"])
                to_refund.append(ledger.Move(payable, account, fen))
            else:
                moves.append(ledger.Move(payable, source, fen))
                if source.startswith("refund:"):  # a late sale's claw-back from a year-end refund
                    self._give_back_clawed(sale, source, fen)
        row["txn_id"] = ledger.post(
            self.conn,
            "reversal",
            moves,
            self.now_ms,
            ref=r.reversal_id,
            memo=r.sale_id,
            accounts=self._accounts,
        )
        if to_refund:
            ledger.post(
                self.conn,
                "reversal_clearing",
                to_refund,
                self.now_ms,
                ref=r.reversal_id,
                memo=f"{r.sale_id}: subsidy of a cleared year",
                accounts=self._accounts,
            )
        row.update(
            subsidy_fen=sale["subsidy_fen"],
            self_fen=sale["self_fen"],
            refunded_subsidy_fen=sum(m.amount_fen for m in to_refund),
        )
        self._holders.add(sale["holder_id"])
        if self.periods.settled(r.occurred_at_ms):
            self._late.append((r.terminal_id, r.seq, sale["canteen_id"], r.occurred_at_ms, r.amount_fen))

    def _give_back_clawed(self, sale: sqlite3.Row, account: str, fen: int) -> None:
        """Undo a late sale's claw-back from the year-end refund ``account``: its clearing
        lines (of the holder, for the year cleared after the sale's time) take back ``fen``,
        the last-clawed first."""
        year = self.periods.clearing_for(sale["occurred_at_ms"])
        left = fen
        for unit_id, clawed in self.conn.execute(
            "SELECT unit_id, clawed_back_fen FROM clearing_lines WHERE year = ? AND holder_id = ? "
            "AND refund_account = ? AND clawed_back_fen > 0 ORDER BY rank",
            (year, sale["holder_id"], account),
        ).fetchall():
            part = min(left, int(clawed))
            self.conn.execute(
                "UPDATE clearing_lines SET clawed_back_fen = clawed_back_fen - ? "
                "WHERE year = ? AND holder_id = ? AND unit_id = ?",
                (part, year, sale["holder_id"], unit_id),
            )
            left -= part
            if left == 0:
                break

    def _note_ecny_refund(self, r: Reversal) -> None:
        """The gateway refund the terminal made, in the e-CNY books (once per refund number)."""
        order = self.conn.execute(
            "SELECT order_no FROM ecny_sales WHERE terminal_id = ? AND seq = ?", (r.terminal_id, r.sale_seq)
        ).fetchone()
        if order is None or r.refund_no is None:
            return
        self.conn.execute(
            "INSERT INTO ecny_refunds(refund_no, order_no, amount_fen, at_ms, by_role, reason) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(refund_no) DO NOTHING",
            (r.refund_no, order[0], r.amount_fen, self.now_ms, f"terminal:{r.terminal_id}", r.reversal_id),
        )

    # -- the end of the txn ---------------------------------------------------------------

    def finish(self) -> list[ReversalResult]:
        """Write the rows with the holders' final balances; return every result in order."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        for holder_id in sorted(self._holders):
            self.changes[holder_id] = holder_change(self.conn, holder_id, self.now_ms)
        applied = (d.row for d in self._rows.values() if d.row["status"] == "applied")
        stamp_balances(applied, self.changes, self.version)
        self.conn.executemany(_UPSERT, [tuple(d.row[c] for c in _COLUMNS) for d in self._rows.values()])
        meal_days: dict[str, int] = {}  # read after the rows are in: a reversed meal is not taken
        for d in self._rows.values():
            if d.meal_ms is not None and d.row["holder_id"]:
                meal_days[d.row["holder_id"]] = max(meal_days.get(d.row["holder_id"], 0), d.meal_ms)
        for holder_id, meals in meals_of_day(self.conn, meal_days).items():
            self.changes[holder_id]["meals"] = meals
        record_late(self.conn, "late_reversals", self._late)
        out: list[ReversalResult] = []
        for item in self._results:
            if isinstance(item, ReversalResult):
                out.append(item)
            else:
                key, status = item
                out.append(result_of(self._rows[key].row, status))
        return out

    def unasked_results(self) -> dict[str, list[ReversalResult]]:
        """After :meth:`finish`: the waiting reversals decided in this txn, per terminal."""
        return {
            t: [result_of(self._rows[k].row, self._rows[k].row["status"]) for k in keys]
            for t, keys in self.unasked.items()
        }

    def _count(self, status: str) -> None:
        if status == "applied":
            self.applied += 1
        elif status == "duplicate":
            self.duplicates += 1
        elif status == "pending":
            self.pending += 1
        else:
            self.rejected += 1


def _refusal(r: Reversal, reason: str) -> ReversalResult:
    return ReversalResult(r.terminal_id, r.seq, r.uuid, "rejected", reason)


def _base_row(r: Reversal, now_ms: int) -> dict[str, Any]:
    return {
        "terminal_id": r.terminal_id,
        "seq": r.seq,
        "uuid": r.uuid,
        "sale_seq": r.sale_seq,
        "sale_uuid": r.sale_uuid,
        "canteen_id": r.canteen_id,
        "operator_card": r.operator_card,
        "amount_fen": r.amount_fen,
        "method": r.method,
        "offline": int(r.offline),
        "refund_no": r.refund_no,
        "occurred_at_ms": r.occurred_at_ms,
        "received_at_ms": now_ms,
        "status": "rejected",
        "reason": None,
        "holder_id": None,
        "unit_id": None,
        "subsidy_fen": 0,
        "self_fen": 0,
        "refunded_subsidy_fen": 0,
        "txn_id": None,
        "applied_at_ms": None,
        "balance_subsidy_fen": None,
        "balance_self_fen": None,
        "balance_version": None,
        "balance_subsidy_year": None,
        "balance_next_subsidy_fen": 0,
        "balance_expired_subsidy_fen": 0,
        "reversal_json": json.dumps(r.to_dict(), ensure_ascii=False, separators=(",", ":")),
    }


def summary(conn: sqlite3.Connection) -> dict[str, Any]:
    """What ``check`` reports: reversals per state, and those waiting for their sale."""
    counts = {"applied": 0, "pending": 0, "rejected": 0}
    for st, n in conn.execute("SELECT status, count(*) FROM reversals GROUP BY status"):
        counts[st] = n
    waiting = [
        {"terminal_id": r[0], "seq": r[1], "sale_seq": r[2], "amount_fen": r[3], "received_at_ms": r[4]}
        for r in conn.execute(
            "SELECT terminal_id, seq, sale_seq, amount_fen, received_at_ms FROM reversals "
            "WHERE status = 'pending' ORDER BY received_at_ms, terminal_id, seq LIMIT 100"
        )
    ]
    return {"counts": counts, "waiting": waiting}
