"""A compromised terminal: a thief with a real terminal's key publishes implausible sales.

The chaos run's implausible sales (:func:`simulator.chaos.inject.implausible_sale`: far
over the limit, a meal or an item at a wrong price, dated days ahead, a huge offline sale
on another unit's card), signed with the terminal's own secret and published on its own
sales topic from a link of the thief's, numbered from
:data:`~simulator.chaos.inject.COMPROMISED_SEQ_BASE` so they never take a number the real
terminal uses. Every one is remembered for the audit (each must be quarantined, none
applied); :meth:`Thief.resend` publishes them all again once the network has healed, as a
thief retries, so each reaches the server whatever the network did to the first copy.
"""

from __future__ import annotations

from shared.protocol import SaleBatch, seal_hmac, topics
from simulator.chaos.inject import COMPROMISED_SEQ_BASE, CompromisedSale, implausible_sale
from simulator.chaos.plan import COMPROMISED_VARIANTS
from simulator.vopr.clock import NodeClock
from simulator.vopr.network import SimBroker
from simulator.vopr.prng import Prng
from simulator.vopr.world import World

WRONG_MEAL_FEN = 999  # neither a staff nor a visitor price of any meal
WRONG_ITEM_FEN = 123  # not the list price of any item
DAYS_AHEAD_MIN = 20 * 365  # a future-dated sale: longer ahead than any run lasts


class Thief:
    def __init__(self, broker: SimBroker, clock: NodeClock, world: World) -> None:
        self.clock = clock
        self.world = world
        self.link = broker.link("thief", []).start()
        self.sales: list[CompromisedSale] = []
        self._batches: list[tuple[str, bytes]] = []

    def steal(self, rng: Prng) -> bool:
        """One batch of implausible sales on a real terminal's topic; False if not sent now."""
        creds = rng.pick(self.world.terminals)
        own = self.world.canteen_unit[creds.canteen_id]
        others = [d.card_id for d in self.world.diners if d.unit_id != own]
        variants = rng.sample(COMPROMISED_VARIANTS, rng.between(1, len(COMPROMISED_VARIANTS)))
        now = self.clock.now_ms()
        first = COMPROMISED_SEQ_BASE + len(self.sales) + 1
        sales = [
            implausible_sale(
                v,
                terminal_id=creds.terminal_id,
                seq=first + i,
                canteen_id=creds.canteen_id,
                card_id=rng.pick(self.world.diners).card_id,
                other_unit_card=rng.pick(others),
                now_ms=now,
                max_sale_fen=self.world.risk["max_sale_fen"],
                meal_fen=WRONG_MEAL_FEN,
                item_fen=WRONG_ITEM_FEN,
                # far enough ahead to be still in the future whenever it arrives: dated in
                # the past by then it would be a plausible sale, and a stolen key can sign those
                days_ahead=rng.between(DAYS_AHEAD_MIN, 2 * DAYS_AHEAD_MIN),
            )
            for i, v in enumerate(variants)
        ]
        self.sales += [
            CompromisedSale(s.terminal_id, s.seq, s.uuid, v) for s, v in zip(sales, variants, strict=True)
        ]
        payload = seal_hmac(
            "sale_batch",
            creds.terminal_id,
            SaleBatch(tuple(sales)).to_body(),
            bytes.fromhex(creds.secret_hex),
            now,
        )
        self._batches.append((topics.sales(creds.terminal_id), payload))
        return self.link.publish(topics.sales(creds.terminal_id), payload)

    def resend(self) -> int:
        return sum(self.link.publish(topic, payload) for topic, payload in self._batches)

    def keys(self) -> list[tuple[str, int, str]]:
        return [(s.terminal_id, s.seq, s.uuid) for s in self.sales]
