"""The invariants: cheap ones after every step, the full audit at the end.

**After every step** (on a read connection of the committed server database):

* the ledger sums to zero;
* every sale the server applied since the last step was told to a diner as approved by
  the terminal that journaled it (``approved``/``recovered``), under the same number —
  nothing applied that no terminal approved — and none is applied twice (by uuid, and by
  its ledger txn);
* no sale a thief signed (a compromised terminal's key) moved money.

**After every settlement and clearing** every invariant of ``canteen-server check``
(:func:`server.closing.check.all_violations`), and the clearing took exactly the subsidy
left at the year end, holder by holder (:mod:`simulator.vopr.workload`).

**At the end**, once the network has healed and everything has drained: the chaos run's
outside audit (:func:`simulator.chaos.audit.audit`, with ``check``'s invariants inside it)
over every terminal's journal and what its diners were told — each approved sale applied
exactly once, nothing applied unapproved, no journaled sale unannounced, the ledger sum 0,
the purses moved by exactly the sales, credits and clearings, the overdraft within the
proven bound, every stolen-key sale quarantined and none applied; each closed quarter's
settlement document unchanged since it closed; each clearing's refund, less what late
sales took back, equal to the year's allocations less the subsidy every sale dated in the
year spent (what the purse held at the year end had every sale arrived in time); and every
terminal caught up with the server's deltas and back on its online limits.

A failed check raises :class:`CheckFailed` with the step it was found at.
"""

from __future__ import annotations

from typing import Any

from server.books import ledger
from server.books.periods import year_cutoff_ms, year_start_ms
from server.closing.check import all_violations
from server.closing.settlement import settlement_document
from server.downstream.deltas import current_version
from simulator.chaos.audit import AuditResult, audit, read_journal
from simulator.chaos.inject import COMPROMISED_SEQ_BASE
from simulator.vopr.model import Sim


class CheckFailed(Exception):
    def __init__(self, step: int, code: str, detail: str) -> None:
        super().__init__(f"step {step}: {code}: {detail}")
        self.step = step
        self.code = code
        self.detail = detail


class Checks:
    def __init__(self, run: Sim) -> None:
        self.run = run
        self.steps_checked = 0
        self.books_checked = 0
        self._sales_rowid = 0
        self._txn_id = 0
        self._told: dict[str, tuple[str, int]] = {}  # uuid → (terminal, seq) told approved
        self._told_seen = [0] * len(run.nodes)
        self._applied: set[str] = set()
        self._sale_txns: set[str] = set()

    def fail(self, code: str, detail: str) -> None:
        raise CheckFailed(self.run.step_no, code, detail)

    # --- every step ----------------------------------------------------------------------

    def step(self) -> None:
        self.steps_checked += 1
        conn = self.run.server.reader()
        total = conn.execute("SELECT coalesce(sum(balance_fen), 0) FROM accounts").fetchone()[0]
        if total != 0:
            self.fail("ledger_sum", f"the ledger sums to {total} fen")
        for i, node in enumerate(self.run.nodes):
            for told in node.told[self._told_seen[i] :]:
                self._told[told.uuid] = (node.terminal_id, told.seq)
            self._told_seen[i] = len(node.told)
        rows = conn.execute(
            "SELECT rowid, terminal_id, seq, uuid, status FROM sales WHERE rowid > ? ORDER BY rowid",
            (self._sales_rowid,),
        ).fetchall()
        for rowid, terminal_id, seq, uuid, status in rows:
            self._sales_rowid = rowid
            if status != "applied":
                continue
            if seq > COMPROMISED_SEQ_BASE:
                self.fail("compromised_applied", f"{terminal_id}/{seq}: a stolen-key sale moved money")
            if self._told.get(uuid) != (terminal_id, seq):
                self.fail(
                    "applied_not_approved", f"{terminal_id}/{seq} applied, but no diner was told it was paid"
                )
            if uuid in self._applied:
                self.fail("double_applied", f"{terminal_id}/{seq} applied twice")
            self._applied.add(uuid)
        for txn_id, ref in conn.execute(
            "SELECT id, ref FROM txns WHERE id > ? AND kind = 'sale' ORDER BY id", (self._txn_id,)
        ).fetchall():
            self._txn_id = txn_id
            if ref in self._sale_txns:
                self.fail("double_applied", f"sale {ref} posted twice")
            self._sale_txns.add(ref)

    # --- after closes --------------------------------------------------------------------

    def books(self, when: str) -> None:
        """Every invariant of ``canteen-server check``, and the clearings' year-end balances."""
        self.books_checked += 1
        violations = all_violations(self.run.server.reader())
        if violations:
            v = violations[0]
            self.fail(f"check:{v.code}", f"{when}: {v.detail} ({len(violations)} violation(s))")
        mismatches = self.run.workload.clearing_mismatches
        if mismatches:
            self.fail("clearing_not_year_end_balance", mismatches[0])

    # --- the end -------------------------------------------------------------------------

    def final(self) -> AuditResult:
        run = self.run
        conn = run.server.reader()
        self.step()
        self.books("at the end")
        journals, pending = {}, {}
        for node in run.nodes:
            journals[node.terminal_id], pending[node.terminal_id] = read_journal(
                node.db_path, node.terminal_id
            )
        events = {
            node.terminal_id: [{"event": t.event, "uuid": t.uuid, "_seen_ms": t.seen_ms} for t in node.told]
            for node in run.nodes
        }
        result = audit(
            conn,
            journals,
            events,
            pending=pending,
            start_balance_fen=run.world.start_balance_fen,
            offline_allowance_fen=run.world.risk["offline_allowance_fen"],
            max_clock_offset_ms=run.world.risk["max_clock_offset_ms"],
            compromised=run.thief.keys(),
            credited_fen=dict(run.workload.credited),
            cleared_fen=self._cleared(),
        )
        if not result.ok:
            first = (
                result.violations[0] if result.violations else {"code": "audit", "detail": "see the audit"}
            )
            self.fail(f"audit:{first['code']}", first["detail"])
        for quarter, doc in sorted(run.workload.closed_quarters.items()):
            if settlement_document(conn, quarter) != doc:
                self.fail(
                    "closed_quarter_changed", f"{quarter}: the settlement document changed after it closed"
                )
        self._clearing_equals_year_end(conn)
        version = current_version(conn)
        for node in run.nodes:
            have = node.delta_version()
            if have != version:
                self.fail(
                    "terminal_behind", f"{node.terminal_id} holds delta {have}, the server is at {version}"
                )
            if not node.in_sync():
                self.fail(
                    "terminal_not_back_online",
                    f"{node.terminal_id} still on its offline limits after the heal",
                )
        return result

    def _cleared(self) -> dict[str, int]:
        """What the clearings took out of each holder's purses (the lines match the clearing
        txns: ``check``'s ``clearing_mismatch``)."""
        rows = self.run.server.read(
            "SELECT holder_id, sum(amount_fen) FROM clearing_lines GROUP BY holder_id"
        )
        return {h: int(fen) for h, fen in rows}

    def _clearing_equals_year_end(self, conn: Any) -> None:
        """Each cleared year's net refund = its allocations − the subsidy its sales spent."""
        credited = self.run.workload.allocated_fen  # what the clerks allocated, as the simulator saw it
        for (year,) in conn.execute("SELECT year FROM clearings ORDER BY year").fetchall():
            spent = dict(
                conn.execute(
                    "SELECT holder_id, sum(subsidy_fen) FROM sales WHERE status = 'applied' "
                    "AND holder_id IS NOT NULL AND occurred_at_ms >= ? AND occurred_at_ms < ? "
                    "GROUP BY holder_id",
                    (year_start_ms(year), year_cutoff_ms(year)),
                ).fetchall()
            )
            refund = dict(
                conn.execute(
                    "SELECT holder_id, sum(amount_fen - clawed_back_fen) FROM clearing_lines WHERE year = ? "
                    "GROUP BY holder_id",
                    (year,),
                ).fetchall()
            )
            for d in self.run.world.diners:
                h = d.holder_id
                left = ledger.subsidy_by_year(conn, h).get(year, 0)
                expected = credited[(h, year)] - spent.get(h, 0) - left
                if refund.get(h, 0) != expected:
                    self.fail(
                        "clearing_not_year_end_balance",
                        f"{year}/{h}: net refund {refund.get(h, 0)} fen, allocations {credited[(h, year)]} "
                        f"less sales' subsidy {spent.get(h, 0)} less still on the purse {left}",
                    )
