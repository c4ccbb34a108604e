"""The tap's folded read, pinned to the reads it folds: :meth:`Store.card_state_and_floor`
must give exactly :meth:`Store.card_state` and :meth:`Store.journal_floor_and_unsent` (the
definitions), for known and unknown cards, pending, settled and reversed sales."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_terminal_store_fast_paths import CARDS, cache, fresh_store, journal, sale_st


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sales=st.lists(sale_st, max_size=12),
    card=st.sampled_from(sorted(CARDS) + ["C9"]),  # C9: no such card
    now=st.integers(0, 2 * 86_400_000),
    acked=st.integers(0, 12),
)
def test_the_card_and_the_floor_read_together_are_the_two_reads(
    sales: list[tuple[str, str, str, int, str, bool]], card: str, now: int, acked: int
) -> None:
    store = fresh_store()
    try:
        cache(store, [None, None])
        journaled = journal(store, sales)
        # some sales leave the outbox (acknowledged): the unsent count moves apart from the journal
        store.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq, _ in journaled[:acked]])
        assert store.card_state_and_floor(card, now) == (
            store.card_state(card, now),
            store.journal_floor_and_unsent(),
        )
    finally:
        store.close()
