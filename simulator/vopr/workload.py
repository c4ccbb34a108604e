"""The diners and the clerks: taps in meal sessions, and the business between them.

The day has three sessions (breakfast, lunch, dinner, :data:`~simulator.vopr.world.SESSIONS`).
At each, most diners come for the meal, some buy at the shop, a few tap a second terminal
right after the first (a cloned card, a double tap), and someone may tap a card that was
reported lost; each goes to a terminal of their own unit's canteen, or anywhere. The
arrivals come a few per step, in the seed's order, until the session is over; then time
jumps to the next session.

At the start of each session the clerks' jobs due run on the server, through its own
functions (:meth:`~simulator.vopr.server_node.ServerNode.admin`): the quarter's allocation
per unit (on time or late, and next year's first quarter early in December), self
top-ups, a card reported lost, then found or replaced; after a quarter's end its
settlement, after a year's end its clearing — each tried without force first, forced after
a few refusals (``terminals_behind``: a terminal has not reported past the end), sometimes
after the first. A job the
server refuses for a reason or cannot run (it is down, it crashed inside) is tried again
at a later session. What was credited to each holder is kept here, independently of the
server, for the audit; only a job the server crashed in is looked up in the committed books
(a top-up by its receipt, an allocation by unit and quarter), as a clerk would after a crash —
the crash may have struck after the commit.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from server.books import ledger
from server.books.periods import Quarter, year_cutoff_ms
from server.closing.clearing import close_year
from server.closing.settlement import settle_quarter
from server.registry import cards, funds
from shared.clock import china_datetime
from shared.errors import DomainError
from simulator.chaos.world import ITEMS
from simulator.vopr.fuse import SimCrash
from simulator.vopr.model import Sim
from simulator.vopr.prng import Prng
from simulator.vopr.server_node import ServerDown
from simulator.vopr.world import SESSIONS, Diner
from terminal.authorize import TapRequest

FORCE_AFTER = 3  # a close refused this many times (terminals behind) is forced
FORCE_EARLY_P = 0.3  # … or, after a refusal, by an impatient clerk at the next try
NEW_YEAR_OFFLINE_P = 0.3  # a terminal cut off across the year's end: its closes find it behind
CLOSE_DELAY_DAYS = (0, 4)  # a quarter or year is closed this many days after its end


@dataclass(frozen=True)
class Arrival:
    diner: int
    terminal: int
    kind: str  # meal | shop
    items: tuple[tuple[str, int], ...] = ()
    lost_card: str | None = None  # tapping a card reported lost (found by someone, or forgotten)


class Workload:
    def __init__(self, run: Sim, rng: Prng) -> None:
        self.run = run
        self.rng = rng
        self.taps = 0
        self.approved = 0
        self.declined: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.credited: Counter[str] = Counter()  # holder → fen put into their purses
        # (holder, year) → subsidy allocated, before the run and during it
        self.allocated_fen: Counter[tuple[str, int]] = Counter(run.world.allocated_fen)
        self.queue: deque[Arrival] = deque()
        self.session = 0
        self._allocations: list[tuple[int, str]] = []  # (due ms, quarter)
        self._allocated: set[tuple[str, str]] = set()
        self._closes: list[tuple[int, str, Any]] = []  # (due ms, "settle" | "clear", quarter or year)
        self._forced_q4: set[int] = set()  # years whose Q4 settlement was forced
        self._refusals: Counter[str] = Counter()
        self._lost: dict[int, str] = {}  # diner → their card reported lost
        self._broke: set[int] = set()  # diners told their balance is short: they top up next session
        self._replacements = 0
        self.closed_quarters: dict[str, dict[str, Any]] = {}  # quarter → its document when closed
        self.clearings: dict[int, dict[str, int]] = {}  # year → holder → subsidy left at the clearing
        self.clearing_mismatches: list[str] = []
        start = self.start_ms = run.time.now_ms
        self._quarter = Quarter.of_ms(start)
        self._allocated |= {(u, str(self._quarter)) for u in run.world.units}
        self._day0 = china_datetime(start).replace(hour=0, minute=0, second=0, microsecond=0)

    # --- sessions -----------------------------------------------------------------------

    def next_session(self) -> None:
        """Jump to the next meal session, note the quarter and year ends crossed, run the
        clerks' jobs due, and line up the session's arrivals."""
        self.session += 1
        day, (_meal, hour) = divmod(self.session, len(SESSIONS))[0], SESSIONS[self.session % len(SESSIONS)]
        start = self._day0 + timedelta(days=day, hours=hour, minutes=self.rng.between(0, 40))
        target = int(start.timestamp() * 1000)
        if target > self.run.time.now_ms:
            self.run.time.advance(target - self.run.time.now_ms)
        self._periods_crossed()
        self._jobs()
        self._arrivals()

    def _periods_crossed(self) -> None:
        now = self.run.time.now_ms
        while now >= self._quarter.end_ms:
            ended, self._quarter = self._quarter, self._quarter.next()
            self.events["quarter_end"] += 1
            delay = self.rng.between(*CLOSE_DELAY_DAYS) * 86_400_000
            self._closes.append((ended.end_ms + delay, "settle", str(ended)))
            if ended.q == 4:
                self.events["year_end"] += 1
                if self.rng.chance(NEW_YEAR_OFFLINE_P):  # a canteen shut over New Year
                    away_ms = delay + self.rng.between(1, 12) * 3_600_000
                    self.run.faults.partition_one_terminal(away_ms)
                # tried right after the Q4 settlement (in order): a terminal still behind then
                # is behind for the clearing too
                self._closes.append((year_cutoff_ms(ended.year) + delay + 1, "clear", ended.year))
            # the new quarter's allocation: usually by the 10th, sometimes late
            late = self.rng.chance(0.2)
            due = self._quarter.start_ms + self.rng.between(15 if late else 0, 30 if late else 9) * 86_400_000
            if (self.run.world.units[0], str(self._quarter)) not in self._allocated:
                self._allocations.append((due, str(self._quarter)))
        if china_datetime(now).month == 12 and self.rng.chance(0.05):
            nxt = str(Quarter(china_datetime(now).year + 1, 1))
            if (self.run.world.units[0], nxt) not in self._allocated and all(
                q != nxt for _, q in self._allocations
            ):
                self._allocations.append((now, nxt))  # next year's subsidy, early
                self.events["allocation_early"] += 1

    def _arrivals(self) -> None:
        r, world, n_term = self.rng, self.run.world, len(self.run.nodes)
        arrivals: list[Arrival] = []
        for i, d in enumerate(world.diners):
            own = [t for t, c in enumerate(world.terminals) if world.canteen_unit[c.canteen_id] == d.unit_id]
            for kind, p in (("meal", 0.8), ("shop", 0.3)):
                if i in self._lost or not r.chance(p):
                    continue
                t = r.pick(own) if own and r.chance(0.7) else r.between(0, n_term - 1)
                items = ((r.pick(list(ITEMS)), r.between(1, 3)),) if kind == "shop" else ()
                arrivals.append(Arrival(i, t, kind, items))
                if r.chance(0.04):  # the same card again at once, elsewhere
                    arrivals.append(Arrival(i, r.between(0, n_term - 1), kind, items))
        for i, card in self._lost.items():
            if r.chance(0.3):
                arrivals.append(Arrival(i, r.between(0, n_term - 1), "shop", (("water", 1),), lost_card=card))
        order = r.sample(range(len(arrivals)), len(arrivals))
        self.queue.extend(arrivals[k] for k in order)

    # --- reversals: the hook ---------------------------------------------------------------
    #
    # Reversals (a sale taken back at the terminal, being built on another branch) are not
    # on main yet. When they land: add "reversal" to Arrival.kind and to EVENT_KINDS in
    # simulator.vopr.run; here, draw a few per session (a diner who was charged twice, a
    # cashier's mistake) and send them through the terminal's own reversal entry point in
    # tap(); give them crash points like a sale's (journal, display, announce) in
    # simulator.vopr.terminal_node; and in simulator.vopr.checks count a reversed sale as
    # applied once and reversed once — its purses and the canteen's payable back where they
    # were, the reversal itself applied exactly once — before calling the audit.

    def take(self, mean: float) -> list[Arrival]:
        n = min(len(self.queue), self.rng.poisson(mean))
        return [self.queue.popleft() for _ in range(n)]

    # --- a tap --------------------------------------------------------------------------

    def tap(self, a: Arrival) -> None:
        nodes = self.run.nodes
        node = nodes[a.terminal]
        if not node.up:  # the diner walks to another terminal that works
            up = [n for n in nodes if n.up]
            if not up:
                self.declined["no_terminal_up"] += 1
                return
            node = self.rng.pick(up)
        diner = self.run.world.diners[a.diner]
        request = TapRequest(card_id=a.lost_card or diner.card_id, kind=a.kind, items=a.items)
        self.taps += 1
        out = node.tap(request)
        if out is None:
            self.declined["terminal_crashed"] += 1
            return
        decision, _sale = out
        if decision.approved:
            self.approved += 1
        else:
            self.declined[decision.reason or "?"] += 1
            if decision.reason in (
                "insufficient_balance",
                "subsidy_expired",
                "card_blocked",
            ) and self.rng.chance(0.7):
                self._broke.add(a.diner)

    # --- the clerks ---------------------------------------------------------------------

    def _jobs(self) -> None:
        now = self.run.time.now_ms
        for due, quarter in sorted(self._allocations):
            if due <= now:
                self._allocate(quarter)
        self._allocations = [
            (d, q)
            for d, q in self._allocations
            if any((u, q) not in self._allocated for u in self.run.world.units)
        ]
        for i in sorted(self._broke):
            self._topup(self.run.world.diners[i])
        self._broke.clear()
        for _ in range(self.rng.poisson(len(self.run.world.diners) / 50)):
            self._topup(self.rng.pick(self.run.world.diners))
        self._cards()
        for due, what, period in sorted(self._closes, key=lambda c: (c[0], str(c[2]))):
            if due <= now and not self._close(what, period):
                break  # in order: a later close waits for this one

    def _admin(self, name: str, job: Any) -> Any:
        """Run a job on the server; None (and tried again later) if it cannot run now."""
        try:
            return self.run.server.admin(job)
        except ServerDown:
            self._refusals[f"{name}:server_down"] += 1
        except SimCrash:  # a crash point inside the job fired: committed or not (see _topup)
            self.run.server.crash()
            self._refusals[f"{name}:server_crashed"] += 1
        except DomainError as exc:
            self._refusals[f"{name}:{exc.code}"] += 1
            raise
        return None

    def _allocate(self, quarter: str) -> None:
        for unit in self.run.world.units:
            if (unit, quarter) in self._allocated:
                continue
            crashes = self._refusals["allocate:server_crashed"]
            try:
                done = self._admin(
                    "allocate", lambda c, now, u=unit: funds.allocate(c, u, quarter, None, now)
                )
                if done is None and self._refusals["allocate:server_crashed"] > crashes:
                    done = self._committed_allocation(unit, quarter)  # a crash after the commit
            except DomainError as exc:
                if exc.code != "already_exists":  # a year already cleared takes none: give up
                    self._allocated.add((unit, quarter))
                continue
            if done is None:
                continue
            self._allocated.add((unit, quarter))
            self.events["allocation"] += 1
            self.events["allocation_late" if done["late"] else "allocation_on_time"] += 1
            for holder in self.run.world.holders_of(unit):
                self.credited[holder] += done["per_person_fen"]
                self.allocated_fen[(holder, Quarter.parse(quarter).year)] += done["per_person_fen"]

    def _committed_allocation(self, unit: str, quarter: str) -> dict[str, Any] | None:
        """The allocation as the committed books have it (None: it was not committed)."""
        rows = self.run.server.read(
            "SELECT per_person_fen, at_ms >= due_ms FROM allocations WHERE unit_id = ? AND quarter = ?",
            (unit, quarter),
        )
        return {"per_person_fen": rows[0][0], "late": bool(rows[0][1])} if rows else None

    def _topup(self, diner: Diner) -> None:
        amount = self.rng.pick([1_000, 5_000, 10_000, 20_000, 50_000, 100_000])
        ref = f"vopr-topup-{self.session}-{self.events['topup_tried']}"
        self.events["topup_tried"] += 1
        crashes = self._refusals["topup:server_crashed"]
        try:
            done = self._admin("topup", lambda c, now: funds.topup(c, diner.card_id, amount, now, ref=ref))
        except DomainError:
            return
        if done is None and self._refusals["topup:server_crashed"] > crashes:
            # the crash may have struck after the commit (in it, or on the way back to the
            # clerk, found by seed 5): the clerk looks the receipt up in the committed books
            done = self.run.server.read("SELECT 1 FROM txns WHERE kind = 'topup' AND ref = ?", (ref,)) or None
        if done is not None:
            self.credited[diner.holder_id] += amount
            self.events["topup"] += 1

    def _cards(self) -> None:
        r, diners = self.rng, self.run.world.diners
        for i, card in sorted(self._lost.items()):
            if not r.chance(0.3):
                continue
            if r.chance(0.5):
                try:
                    done = self._admin("found", lambda c, now, card=card: cards.report_found(c, card, now))
                except DomainError:
                    done = None
                if done is not None:
                    del self._lost[i]
                    self.events["card_found"] += 1
            else:
                self._replacements += 1
                new = f"{diners[i].holder_id}-R{self._replacements}"
                try:
                    done = self._admin(
                        "replace", lambda c, now, card=card, new=new: cards.replace(c, card, new, now)
                    )
                except DomainError:
                    done = None
                if done is not None:
                    del self._lost[i]
                    diners[i].card_id = new
                    diners[i].cards.append(new)
                    self.events["card_replaced"] += 1
        if r.chance(0.08):
            i = r.between(0, len(diners) - 1)
            if i not in self._lost:
                card = diners[i].card_id
                try:
                    done = self._admin("lost", lambda c, now: cards.report_lost(c, card, now))
                except DomainError:
                    done = None
                if done is not None:
                    self._lost[i] = card
                    self.events["card_lost"] += 1

    def _close(self, what: str, period: Any) -> bool:
        """Settle a quarter or clear a year; True when closed (or nothing to do)."""
        key = f"{what}:{period}"
        refused = self._refusals[f"{key}:terminals_behind"]
        # a clerk who had to force the year's last settlement forces its clearing at the
        # first refusal too: the same terminal is behind (the only way a clearing is forced)
        forced_q4 = what == "clear" and int(period) in self._forced_q4
        force = refused >= FORCE_AFTER or (refused > 0 and (forced_q4 or self.rng.chance(FORCE_EARLY_P)))
        if what == "settle":
            job = lambda c, now: settle_quarter(c, period, now, force=force)  # noqa: E731
        else:
            before = self._subsidy_left(int(period))
            job = lambda c, now: close_year(c, period, now, refund_to=self.run.refund_to, force=force)  # noqa: E731
        try:
            done = self._admin(key, job)
        except DomainError:
            return False
        if done is None:
            return False
        doc, new = done
        self._closes = [c for c in self._closes if (c[1], c[2]) != (what, period)]
        if not new:
            return True
        self.events["settlement" if what == "settle" else "clearing"] += 1
        if force:
            self.events["settlement_forced" if what == "settle" else "clearing_forced"] += 1
        if what == "settle":
            self.closed_quarters[str(period)] = doc
            closed = Quarter.parse(str(period))
            if force and closed.q == 4:
                self._forced_q4.add(closed.year)
        else:
            self._check_clearing(int(period), before)
        self.run.checks.books(f"after {key}")
        return True

    def _subsidy_left(self, year: int) -> dict[str, int]:
        """Each holder's subsidy of ``year`` and earlier still on the purses (what a
        clearing of ``year`` must take), read just before it runs."""
        conn = self.run.server.reader()
        left: dict[str, int] = {}
        for d in self.run.world.diners:
            fen = sum(v for y, v in ledger.subsidy_by_year(conn, d.holder_id).items() if y <= year and v > 0)
            if fen:
                left[d.holder_id] = fen
        return left

    def _check_clearing(self, year: int, before: dict[str, int]) -> None:
        """The clearing took exactly the subsidy left at the year end, holder by holder."""
        taken = dict(
            self.run.server.read(
                "SELECT holder_id, sum(amount_fen) FROM clearing_lines WHERE year = ? GROUP BY holder_id",
                (year,),
            )
        )
        self.clearings[year] = before
        for h in sorted(set(before) | set(taken)):
            if before.get(h, 0) != taken.get(h, 0):
                self.clearing_mismatches.append(
                    f"{year}/{h}: subsidy left {before.get(h, 0)} fen, clearing took {taken.get(h, 0)} fen"
                )
