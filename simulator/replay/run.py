"""``canteen-sim replay``: a scripted story on a simulated clock, through the real system.

:func:`run_scenario` starts a broker (embedded by default, or a running one handed in), the
real server and, per canteen, the scenario's number of real terminals with simulated card
readers and QR scanners (:mod:`simulator.harness.driver`). One :class:`FakeClock` is shared
by the server and every terminal; each event sets it to its ``at``.

* **Setup** goes through the HTTP API with real tokens: the bureau (admin) registers units,
  canteens (meals, prices, visitor prices, meal limit, risk limits), shop items (a price
  above its reference is refused, and the refusal is in the result) and quality bands;
  each unit's clerk adds its people; each diner opens QR pay (a credential) on the phone.
* **Events**: a unit's clerk allocates and scores; the bank's top-up and the bureau's
  closes are the admin's; a tap lays the card on the terminal's reader (or shows the
  phone's fresh code to its scanner) and the answer is what the terminal tells the diner.
* **Between events** the system is as a real deployment would be: every connected terminal
  has sent its sales, had them acknowledged, and caught up with the server's deltas. A
  ``network`` event cuts a canteen's terminals (through their proxies) for the given
  simulated minutes; before the first event at or after the end the clock is set to the
  end, the link healed, and the terminal drains. Before a settlement or a year-end
  clearing every connected terminal has reported a watermark past the cutoff; one that is
  still cut off makes the close refuse (``terminals_behind``) unless the event forces it.
* **The result** is read back through the API (cards, statements, clearings, allocations,
  sales, the ledger check) plus the cluster's audit of every terminal journal against the
  server. A refused request is part of the story, not an error: it is listed in
  ``refusals`` with its code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.books.periods import Quarter, year_cutoff_ms
from shared.broker import Broker
from shared.clock import FakeClock
from simulator.harness.cluster import Cluster
from simulator.harness.driver import Api, ApiRefusal, Harness, Till
from simulator.replay.result import collect
from simulator.replay.scenario import Event, Scenario
from terminal.devices import Order

log = logging.getLogger(__name__)
MINUTE_MS = 60_000


def run_scenario(
    scenario: Scenario,
    *,
    broker: str | Broker = "embedded",
    workdir: str | Path | None = None,
    terminal_prefix: str | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` from start to end; returns the result document (see the module doc)."""
    started = time.monotonic()
    logging.getLogger("shared.mqtt").setLevel(logging.ERROR)
    start_ms = scenario.events[0].at_ms if scenario.events else 0
    clock = FakeClock(start_ms)
    with Cluster(
        workdir,
        broker=broker,
        clock=clock,
        terminal_prefix=terminal_prefix,
        server_config={"YEAR_END_REFUND_TO": scenario.refund_to},
    ) as cluster:
        harness = Harness(cluster)
        try:
            story = _Story(scenario, harness, clock)
            story.setup()
            for event in scenario.events:
                story.play(event)
            story.finish()
            result = story.result()
        finally:
            harness.close()
    result["elapsed_s"] = round(time.monotonic() - started, 2)
    return result


def healthy(result: dict[str, Any]) -> bool:
    """Every ledger invariant holds and every approved sale is applied exactly once."""
    audit = result["audit"]
    return (
        not result["violations"]
        and result["ledger_sum_fen"] == 0
        and audit["mismatches"] == 0
        and audit["pending"] == 0
        and audit["approved"] == audit["applied"]
        and audit["reversals_approved"] == audit["reversals_applied"]
    )


class _Story:
    """A scenario being played; what it has seen is read back by :func:`collect` (as a
    :class:`~simulator.replay.result.Story`)."""

    def __init__(self, scenario: Scenario, harness: Harness, clock: FakeClock) -> None:
        self.s = scenario
        self.h = harness
        self.clock = clock
        self.admin = harness.admin
        self.unit_ids: dict[str, str] = {}
        self.canteen_ids: dict[str, str] = {}
        self.clerks: dict[str, Api] = {}  # unit name -> the unit's clerk
        self.holders: dict[str, tuple[str, str]] = {}  # card -> (holder id, unit name)
        self.diners: dict[str, Api] = {}  # holder id -> the diner's phone
        self.tills: dict[tuple[str, int], Till] = {}
        self.outages: list[tuple[int, Till]] = []
        self.years_closed: set[int] = set()
        self.declines: list[dict[str, Any]] = []
        self.cashier: list[dict[str, Any]] = []  # the cashier's refused steps (checkout events)
        self.refusals: list[dict[str, Any]] = []
        self.approved: dict[str, dict[str, Any]] = {}  # sale uuid -> what the story knows
        self.reversals: list[dict[str, Any]] = []  # reversals the terminals made (冲正)
        self.reversal_declines: list[dict[str, Any]] = []  # reversals a terminal refused

    # --- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        for u in self.s.units:
            unit = self.admin.post(
                "/api/v1/units", {"name": u.name, "quarterly_standard_fen": u.quarterly_standard_fen}
            )
            self.unit_ids[u.name] = unit["id"]
            self.clerks[u.name] = self.h.token("clerk", unit_id=unit["id"])
        for c in self.s.canteens:
            body = {
                "name": c.name,
                "unit_id": self.unit_ids[c.unit],
                "operator": c.operator,
                "self_operated": c.self_operated,
                "config": c.config,
            }
            cid = self.admin.post("/api/v1/canteens", body)["id"]
            self.canteen_ids[c.name] = cid
            for item in c.items:
                self._try(
                    None,
                    "item",
                    lambda item=item, cid=cid: self.admin.put(
                        f"/api/v1/canteens/{cid}/items/{item['sku']}",
                        {
                            k: item[k]
                            for k in ("name", "price_fen", "reference_price_fen", "barcodes")
                            if k in item
                        },
                    ),
                )
            if c.quality_bands is not None:
                self.admin.put(f"/api/v1/canteens/{cid}/quality-bands", {"bands": c.quality_bands})
        for i, p in enumerate(self.s.people, start=1):
            holder = self.clerks[p.unit].post(
                f"/api/v1/units/{self.unit_ids[p.unit]}/holders",
                {"name": p.name, "staff_no": f"S{i:04d}", "card_id": p.card},
            )
            self.holders[p.card] = (holder["id"], p.unit)
            diner = self.h.token("diner", holder_id=holder["id"])
            diner.post("/api/v1/qr/credentials", {"card_id": p.card})  # the diner opens QR pay on the phone
            if p.pin is not None:  # the diner sets a payment PIN on the phone
                diner.put(f"/api/v1/holders/{holder['id']}/pin", {"pin": p.pin})
            self.diners[holder["id"]] = diner
        for c in self.s.canteens:
            for n in range(1, c.terminals + 1):
                self.tills[(c.name, n)] = self.h.add_till(self.canteen_ids[c.name], c.name)
        self.h.settle_down()

    # --- events --------------------------------------------------------------------------

    def play(self, e: Event) -> None:
        self._heal_until(e.at_ms)
        self.clock.set_ms(e.at_ms)
        handler: Callable[[Event], None] = getattr(self, f"_on_{e.kind}")
        self._try(e, e.kind, lambda: handler(e))
        self.h.settle_down()

    def finish(self) -> None:
        """Heal every outage still running (at its end) and let everything drain."""
        if self.outages:
            self._heal_until(max(end for end, _ in self.outages))
        self.h.settle_down()

    def _heal_until(self, now_ms: int) -> None:
        for end, till in sorted(self.outages, key=lambda o: o[0]):
            if end <= now_ms:
                self.clock.set_ms(max(self.clock.now_ms(), end))
                self.h.heal(till)
                self.outages.remove((end, till))
                self.h.settle_down()

    def _try(self, e: Event | None, what: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except ApiRefusal as r:
            self.refusals.append(
                {
                    "index": e.index if e else None,
                    "at": e.at if e else "setup",
                    "event": what,
                    "code": r.code,
                    "detail": r.detail,
                }
            )

    def _clerk_of_card(self, card: str) -> Api:
        return self.clerks[self.holders[card][1]]

    def _on_allocate(self, e: Event) -> None:
        body: dict[str, Any] = {"unit_id": self.unit_ids[e.args["unit"]], "quarter": e.args["quarter"]}
        if "per_person_fen" in e.args:
            body["per_person_fen"] = e.args["per_person_fen"]
        self.clerks[e.args["unit"]].post("/api/v1/allocations", body)

    def _on_topup(self, e: Event) -> None:
        self.admin.post(
            "/api/v1/topups",
            {
                "card_id": e.args["card"],
                "amount_fen": e.args["amount_fen"],
                "ref": f"{self.s.name}-{e.index}",
            },
        )

    def _on_tap(self, e: Event) -> None:
        self._pay(e, Order("meal"))

    def _on_buy(self, e: Event) -> None:
        self._pay(e, Order("shop", e.args.get("items", ()), e.args.get("amount_fen")))

    def _on_checkout(self, e: Event) -> None:
        """The cashier scans and keys the basket at a till in shop mode; the diner pays."""
        till = self.tills[(e.args["canteen"], e.args.get("terminal", 1))]
        for (step, arg), answer in zip(e.args["steps"], till.cashier(e.args["steps"]), strict=True):
            if answer["event"] == "basket_refused":
                self.cashier.append(
                    {
                        "index": e.index,
                        "at": e.at,
                        "step": f"{step} {arg}".strip(),
                        "reason": answer["reason"],
                    }
                )
        self._pay(e, None)

    def _pay(self, e: Event, order: Order | None) -> None:
        """Pay for ``order`` (None: for the cashier's basket) with the event's card or code."""
        card = e.args["card"]
        till = self.tills[(e.args["canteen"], e.args.get("terminal", 1))]
        if e.args.get("method", "card") == "qr":
            holder_id = self.holders[card][0] if card in self.holders else self._holder_of(card)
            code = self.diners[holder_id].get("/api/v1/qr/my-code")["code"]
            if order is None:
                answer = till.pay_basket(None, code, pin=e.args.get("pin"))
            else:
                answer = till.show_code(code, order, pin=e.args.get("pin"))
        elif order is None:
            answer = till.pay_basket(card, pin=e.args.get("pin"))
        else:
            answer = till.present_card(card, order, pin=e.args.get("pin"))
        if answer["event"] == "approved":
            self.approved[answer["uuid"]] = {
                "index": e.index,
                "at": e.at,
                "card": card,
                "canteen": till.canteen_name,
                "terminal": till.id,
                "offline": answer["offline"],
                "items": till.sale_items(answer["seq"]),
            }
        else:
            self.declines.append(
                {
                    "index": e.index,
                    "at": e.at,
                    "card": card,
                    "canteen": till.canteen_name,
                    "reason": answer["reason"],
                }
            )

    def _holder_of(self, card: str) -> str:
        holder_id = self.admin.get(f"/api/v1/cards/{card}")["holder_id"]
        return str(holder_id)

    def _on_network(self, e: Event) -> None:
        n = e.args.get("terminal")
        tills = [
            t for (name, k), t in self.tills.items() if name == e.args["canteen"] and (n is None or k == n)
        ]
        for t in tills:
            if not t.cut:
                self.h.cut(t)
            self.outages = [o for o in self.outages if o[1] is not t]
            self.outages.append((e.at_ms + e.args["offline_minutes"] * MINUTE_MS, t))

    def _on_score(self, e: Event) -> None:
        canteen = self.s.canteen(e.args["canteen"])
        self.clerks[canteen.unit].put(
            f"/api/v1/canteens/{self.canteen_ids[canteen.name]}/quality-scores/{e.args['quarter']}",
            {"score": e.args["score"]},
        )

    def _on_settle(self, e: Event) -> None:
        end = Quarter.parse(e.args["quarter"]).end_ms
        if self.clock.now_ms() >= end:
            self.h.wait_watermarks(end)
        self.admin.post(f"/api/v1/settlements/{e.args['quarter']}", {"force": e.args.get("force", False)})

    def _on_close_year(self, e: Event) -> None:
        cutoff = year_cutoff_ms(e.args["year"])
        if self.clock.now_ms() >= cutoff:
            self.h.wait_watermarks(cutoff)
        self.admin.post(f"/api/v1/clearings/{e.args['year']}", {"force": e.args.get("force", False)})
        self.years_closed.add(e.args["year"])

    def _on_lost(self, e: Event) -> None:
        card = e.args["card"]
        clerk = self._clerk_of_card(card)
        clerk.post(f"/api/v1/cards/{card}/lost")
        if e.args.get("new_card"):
            clerk.post(f"/api/v1/cards/{card}/replace", {"new_card_id": e.args["new_card"]})
            self.holders[e.args["new_card"]] = self.holders[card]

    def _on_found(self, e: Event) -> None:
        self._clerk_of_card(e.args["card"]).post(f"/api/v1/cards/{e.args['card']}/found")

    def _on_reversal(self, e: Event) -> None:
        """The canteen's operator reverses a sale on the terminal's keypad (冲正)."""
        till = self.tills[(e.args["canteen"], e.args.get("terminal", 1))]
        answer = till.reverse(e.args["operator"], e.args["pin"], e.args.get("card"))
        known = {"index": e.index, "at": e.at, "canteen": till.canteen_name, "card": e.args.get("card")}
        if answer["event"] == "reversed":
            self.reversals.append(
                {
                    **known,
                    "sale_uuid": answer["sale_uuid"],
                    "uuid": answer["uuid"],
                    "offline": answer["offline"],
                }
            )
        else:
            self.reversal_declines.append({**known, "reason": answer["reason"]})

    def _on_price(self, e: Event) -> None:
        canteen = self.s.canteen(e.args["canteen"])
        known = next((i for i in canteen.items if i["sku"] == e.args["sku"]), {})
        body = {
            "name": e.args.get("name", known.get("name", e.args["sku"])),
            "price_fen": e.args["price_fen"],
            "reference_price_fen": e.args.get(
                "reference_price_fen", known.get("reference_price_fen", e.args["price_fen"])
            ),
        }
        self.admin.put(f"/api/v1/canteens/{self.canteen_ids[canteen.name]}/items/{e.args['sku']}", body)

    # --- the result ----------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        return collect(self)
