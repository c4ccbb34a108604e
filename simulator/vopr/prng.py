"""The seed's random streams.

Each concern draws from its own stream (``workload``, ``network``, ``faults`` …), seeded
from the run's seed and the stream's name, so adding a draw to one concern does not shift
every other decision of the run. :class:`random.Random` seeded with a string hashes it
with SHA-512: the same seed gives the same draws on every machine and in every process
(unlike ``hash()``, which Python randomizes per process).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Prng:
    def __init__(self, seed: int, stream: str) -> None:
        self._r = random.Random(f"vopr/{seed}/{stream}")

    def chance(self, p: float) -> bool:
        return p > 0 and self._r.random() < p

    def uniform(self, lo: float, hi: float) -> float:
        return self._r.uniform(lo, hi)

    def between(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]``."""
        return self._r.randint(lo, hi)

    def pick(self, items: Sequence[T]) -> T:
        return items[self._r.randrange(len(items))]

    def exponential_ms(self, mean_ms: float) -> int:
        return int(-mean_ms * math.log(1.0 - self._r.random()))

    def poisson(self, mean: float) -> int:
        """How many events of rate ``mean`` happen in one unit (Knuth; small means only)."""
        limit, k, p = math.exp(-mean), 0, self._r.random()
        while p > limit:
            k += 1
            p *= self._r.random()
        return k

    def pick_weighted(self, items: Sequence[T], weights: Sequence[int]) -> T:
        return self._r.choices(items, weights=weights)[0]

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        return self._r.sample(list(items), k)
