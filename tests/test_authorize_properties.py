"""Money invariants of the terminal's decisions, as hypothesis properties.

* never more than the available balance (+ the offline allowance when offline);
* the purse split always adds up, subsidy first;
* never a blocked card — neither in the pure function nor through the real cache, whatever
  order acks and deltas arrive in, once the deny-list entry has arrived.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clock import FakeClock, ms_from_china
from shared.protocol import SaleResult
from shared.protocol.messages import Balance, decode_changes
from terminal.agent import Terminal
from terminal.authorize import CardState, LinkState, TapRequest, authorize
from terminal.rules import HOUR_MS, CanteenRules, RiskLimits
from tests.terminal_support import offline_config

NOON = ms_from_china("2026-01-06T12:00")
RULES = CanteenRules.from_config(
    "C01",
    {
        "unit_id": "U01",
        "meals": {"lunch": {"start": "11:30", "end": "13:30", "price_fen": 1200, "visitor_price_fen": 1500}},
        "items": {"tissue": {"price_fen": 350, "reference_price_fen": 400}, "water": {"price_fen": 200}},
    },
)

fen = st.integers(min_value=-5_000, max_value=50_000)
cards = st.builds(
    CardState,
    card_id=st.just("C1"),
    card_status=st.sampled_from(["active", "active", "active", "lost", "retired"]),
    holder_id=st.just("H1"),
    unit_id=st.sampled_from(["U01", "U02"]),
    subsidy_fen=st.integers(min_value=0, max_value=50_000),
    self_fen=fen,
    blocked=st.booleans(),
    version=st.just(1),
    unconfirmed_fen=st.integers(min_value=0, max_value=30_000),
    unconfirmed_count=st.integers(min_value=0, max_value=10),
)
limits = st.builds(
    RiskLimits,
    max_sale_fen=st.integers(min_value=0, max_value=20_000),
    offline_allowance_fen=st.integers(min_value=0, max_value=5_000),
    max_offline_total_fen=st.integers(min_value=0, max_value=40_000),
    max_offline_sales=st.integers(min_value=0, max_value=10),
)
links = st.builds(
    LinkState,
    online=st.booleans(),
    offline_since_ms=st.one_of(st.none(), st.integers(min_value=NOON - 30 * HOUR_MS, max_value=NOON)),
    last_sync_ms=st.one_of(st.none(), st.integers(min_value=NOON - 80 * HOUR_MS, max_value=NOON)),
    unsent_sales=st.integers(min_value=0, max_value=25_000),
    clock_offset_ms=st.one_of(st.none(), st.integers(min_value=-600_000, max_value=600_000)),
)
requests = st.one_of(
    st.builds(TapRequest, card_id=st.just("C1")),
    st.builds(
        TapRequest,
        card_id=st.just("C1"),
        kind=st.just("shop"),
        amount_fen=st.integers(min_value=-10, max_value=30_000),
    ),
    st.builds(
        TapRequest,
        card_id=st.just("C1"),
        kind=st.just("shop"),
        items=st.lists(
            st.tuples(st.sampled_from(["tissue", "water"]), st.integers(1, 20)), min_size=1, max_size=4
        ).map(tuple),
    ),
)


@given(requests, cards, limits, links, st.integers(min_value=0, max_value=2))
@settings(max_examples=2000, deadline=None)
def test_never_more_than_the_available_balance_plus_the_offline_allowance(
    request: TapRequest, card: CardState, lim: RiskLimits, link: LinkState, meals: int
) -> None:
    d = authorize(request, card, RULES, lim, link, NOON, meals)
    if not d.approved:
        assert d.reason
        return
    allowance = 0 if link.online else lim.offline_allowance_fen
    available = card.subsidy_fen + card.self_fen - card.unconfirmed_fen
    assert 0 < d.amount_fen <= available + allowance
    assert d.amount_fen <= lim.max_sale_fen
    assert d.subsidy_fen + d.self_fen == d.amount_fen and d.subsidy_fen >= 0 and d.self_fen >= 0
    assert d.subsidy_fen <= max(card.subsidy_fen - card.unconfirmed_fen, 0)
    assert card.card_status == "active" and not card.blocked
    if not link.online:
        assert card.unconfirmed_fen + d.amount_fen <= lim.max_offline_total_fen
        assert card.unconfirmed_count < lim.max_offline_sales
    if d.meal_period is not None:
        assert meals < RULES.meal_limit


# --- through the real cache ----------------------------------------------------------------

HOLDER = {"kind": "holder", "holder_id": "H1", "unit_id": "U01", "subsidy_fen": 100_000, "self_fen": 0}
CARD = {"kind": "card", "card_id": "C1", "holder_id": "H1", "status": "active"}
steps = st.lists(
    st.sampled_from(["block", "unblock", "lose_card", "find_card", "deliver", "ack", "tap", "tap"]),
    min_size=1,
    max_size=25,
)


@given(steps)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_blocked_card_is_never_approved_once_its_deny_list_entry_arrived(plan: list[str]) -> None:
    """The server changes the holder/card (each change a new version), the terminal receives
    those deltas in order but late, and acks of its own sales carry balances of versions it
    has not seen as deltas yet. After a delta saying "blocked" or "lost" is applied, and
    until a later delta lifts it, no tap is approved."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock(NOON)
        config = offline_config(Path(tmp), canteen_id="C01", server_public_key="00" * 32)
        term = Terminal(config, clock)
        term.sync.assume(in_sync=True)  # no network needed
        canteen = {
            "kind": "canteen",
            "canteen_id": "C01",
            "config": {"unit_id": "U01", "items": {"water": {"price_fen": 200}}},
        }
        term.store.apply_changes(1, decode_changes(({**HOLDER, "blocked": False}, CARD, canteen)))
        version, holder_blocked, card_status = 1, False, "active"
        queued: list[tuple[int, tuple[dict, ...]]] = []
        said_blocked = said_lost = denied = False  # what the deltas applied so far say
        for step in plan:
            if step in ("block", "unblock"):
                version += 1
                holder_blocked = step == "block"
                queued.append((version, ({**HOLDER, "blocked": holder_blocked},)))
            elif step in ("lose_card", "find_card"):
                version += 1
                card_status = "lost" if step == "lose_card" else "active"
                queued.append((version, ({**CARD, "status": card_status},)))
            elif step == "deliver" and queued:
                v, changes = queued.pop(0)
                term.store.apply_changes(v, decode_changes(changes))
                for c in changes:  # what the deny-list that has arrived says
                    if c["kind"] == "holder":
                        said_blocked = c["blocked"]
                    else:
                        said_lost = c["status"] != "active"
                denied = said_blocked or said_lost
            elif step == "ack":
                pending = term.store.outbox_after(0, 1)
                if pending:
                    seq, sale = pending[0]
                    version += 1  # the server's txn records a delta at this version
                    queued.append((version, ({**HOLDER, "blocked": holder_blocked},)))
                    balance = Balance(100_000, 0, version)
                    term.store.apply_results(
                        (SaleResult("T1", seq, sale["uuid"], "applied", None, 200, 0, 0, "H1", balance),),
                        "T1",
                    )
            elif step == "tap":
                decision, _ = term.tap(TapRequest("C1", kind="shop", items=(("water", 1),)))
                if denied:
                    assert not decision.approved and decision.reason == "card_blocked"
        term.store.close()
        term.sync.store.close()
