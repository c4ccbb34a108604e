"""The terminal store's fast paths, pinned to the general ones on many inputs.

* :meth:`Store.card_state` and :meth:`Store.meals_taken` leave a reversed sale out by looking
  it up, as the list of reversed sales they first read left it out.
* :meth:`Store.apply_results` settles a whole ack with one statement per table; it must leave
  the database, and count, exactly as settling result by result did (the specification below).
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.protocol import SaleResult
from shared.protocol.messages import Balance, decode_changes
from shared.sqlite_txn import write_txn
from terminal import reversals
from terminal.store import Store
from tests.terminal_support import journal_sale

_names = itertools.count()
DAY = "1970-01-01"
HOLDERS = ("H1", "H2")
# C3's holder is not in the cache: the card is unknown to a tap, though its holder has sales
CARDS = {"C1": "H1", "C2": "H2", "C3": "H9"}

sale_st = st.tuples(
    st.sampled_from(sorted(CARDS)),
    st.sampled_from(("meal", "shop")),
    st.sampled_from(("lunch", "dinner")),
    st.integers(0, 3).map(lambda d: d * 43_200_000),  # noon or midnight of days 0..1
    st.sampled_from(("pending", "applied", "rejected")),
    st.booleans(),  # reversed at this terminal
)
meals_st = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "day": st.sampled_from((DAY, "1970-01-02")),
            "taken": st.dictionaries(
                st.sampled_from(("C01", "C02")),
                st.dictionaries(st.sampled_from(("lunch", "dinner")), st.integers(0, 4), max_size=2),
                max_size=2,
            ),
        }
    ),
)


def fresh_store() -> Store:
    return Store(f"file:/fast-paths-{next(_names)}?vfs=memdb")


def cache(store: Store, meals: list[dict[str, Any] | None]) -> None:
    changes: list[dict[str, Any]] = []
    for holder, m in zip(HOLDERS, meals, strict=True):
        change = {"kind": "holder", "holder_id": holder, "unit_id": "U01", "subsidy_fen": 3000}
        changes.append({**change, "self_fen": 500, "blocked": False, **({"meals": m} if m else {})})
    changes += [{"kind": "card", "card_id": c, "holder_id": h, "status": "active"} for c, h in CARDS.items()]
    store.apply_changes(1, decode_changes(tuple(changes)))


def journal(store: Store, sales: list[tuple[str, str, str, int, str, bool]]) -> list[tuple[int, str]]:
    journaled = []
    for card, kind, period, at, status, reversed_ in sales:
        sale = journal_sale(
            store,
            300,
            at,
            card_id=card,
            holder_id=CARDS[card],
            kind=kind,
            meal_period=period if kind == "meal" else None,
            announced=True,
        )
        journaled.append((sale.seq, sale.uuid))
        if status != "pending":
            store.apply_results((SaleResult("T1", sale.seq, sale.uuid, status, reason=None),), "T1")
        if reversed_:
            row = store.conn.execute("SELECT * FROM journal WHERE seq = ?", (sale.seq,)).fetchone()
            reversals.record(
                store,
                terminal_id="T1",
                canteen_id="C01",
                sale=dict(row),
                operator_card="OP1",
                occurred_at_ms=at + 1,
                offline=False,
            )
    return journaled


# the specification of the two reads that leave reversed sales out: as first written, with
# the list of reversed sales (NOT IN); the store looks each one up (NOT EXISTS)
REVERSED = "SELECT sale_seq FROM reversals WHERE status <> 'rejected'"
UNCONFIRMED = (
    "SELECT coalesce(sum(amount_fen), 0), count(*) FROM journal WHERE holder_id = ? "
    f"AND status = 'pending' AND seq NOT IN ({REVERSED})"
)
MEALS = (
    "SELECT count(*), coalesce(sum(status = 'pending'), 0) FROM journal WHERE holder_id = ? "
    "AND occurred_at_ms >= ? AND kind = 'meal' AND meal_period = ? AND status <> 'rejected' "
    f"AND seq NOT IN ({REVERSED})"
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sales=st.lists(sale_st, max_size=12), now=st.integers(0, 2 * 86_400_000))
def test_reversed_sales_are_left_out_as_the_list_of_reversals_leaves_them_out(
    sales: list[tuple[str, str, str, int, str, bool]], now: int
) -> None:
    store = fresh_store()
    try:
        cache(store, [None, None])  # no server count: meals_taken is the journal's own
        journal(store, sales)
        for card_id, holder in CARDS.items():
            card = store.card_state(card_id, now)
            if card is not None:
                fen, n = store.conn.execute(UNCONFIRMED, (holder,)).fetchone()
                assert (card.unconfirmed_fen, card.unconfirmed_count) == (fen, n)
            for period in ("lunch", "dinner"):
                for since in (0, 86_400_000):
                    own, pending = store.conn.execute(MEALS, (holder, since, period)).fetchone()
                    taken = store.meals_taken(holder, "C01", period, DAY, since)
                    assert taken == max(own, pending)
    finally:
        store.close()


def settle_one_by_one(store: Store, results: tuple[SaleResult, ...], terminal_id: str) -> dict[str, int]:
    """The specification: :meth:`Store.apply_results` as it was, result by result."""
    counts = {"applied": 0, "rejected": 0, "quarantined": 0, "ignored": 0}
    with write_txn(store.conn):
        for r in results:
            if r.terminal_id != terminal_id:
                counts["ignored"] += 1
                continue
            outcome = "rejected" if r.rejected or r.quarantined else "applied"
            if not store.conn.execute(
                "UPDATE journal SET status = ?, reason = ? WHERE seq = ? AND uuid = ?",
                (outcome, r.reason, r.seq, r.uuid),
            ).rowcount:
                counts["ignored"] += 1
                continue
            store.conn.execute("DELETE FROM outbox WHERE seq = ?", (r.seq,))
            counts["quarantined" if r.quarantined else outcome] += 1
            if r.holder_id and r.balance is not None:
                store.take_balance(r.holder_id, r.balance)
    return counts


def state(store: Store) -> list[Any]:
    return [
        [tuple(r) for r in store.conn.execute(sql)]
        for sql in (
            "SELECT seq, status, reason FROM journal ORDER BY seq",
            "SELECT seq FROM outbox ORDER BY seq",
            "SELECT * FROM holders ORDER BY holder_id",
        )
    ]


class Undo(Exception):
    """Rolls the specification's writes back."""


result_st = st.tuples(
    st.integers(0, 7),  # which sale (beyond the journal: a sale this terminal never made)
    st.booleans(),  # the sale's own uuid, or another one
    st.sampled_from(("T1", "T1", "T1", "T2")),
    st.sampled_from(("applied", "rejected", "quarantined", "duplicate")),
    st.sampled_from((None, "card_lost", "sale_over_limit")),
    st.sampled_from(("H1", "H2", None)),
    st.one_of(st.none(), st.tuples(st.integers(-500, 5000), st.integers(0, 5))),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_sales=st.integers(0, 6), drawn=st.lists(result_st, max_size=8))
def test_settling_an_ack_at_once_is_settling_it_result_by_result(
    n_sales: int, drawn: list[tuple[int, bool, str, str, str | None, str | None, tuple[int, int] | None]]
) -> None:
    store = fresh_store()
    try:
        cache(store, [None, None])
        sales = journal(store, [("C1", "meal", "lunch", 0, "pending", False)] * n_sales)
        results = []
        for i, own_uuid, terminal, status, reason, holder, balance in drawn:
            seq, uuid = sales[i] if i < len(sales) else (100 + i, "f" * 32)
            results.append(
                SaleResult(
                    terminal,
                    seq,
                    uuid if own_uuid else "0" * 32,
                    status,
                    reason,
                    holder_id=holder,
                    balance=None if balance is None else Balance(balance[0], 100, balance[1], 1970),
                )
            )
        try:
            with write_txn(store.conn):
                expected = (settle_one_by_one(store, tuple(results), "T1"), state(store))
                raise Undo
        except Undo:
            pass
        assert (store.apply_results(tuple(results), "T1"), state(store)) == expected
    finally:
        store.close()
