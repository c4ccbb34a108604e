"""The decoders' fast paths (the well-formed case checked in one expression, the field
readers only to name a fault) give exactly the verdicts of the readers alone: the same
record, or the same error code and detail, on any value of any field."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.amounts import FEN_MAX, FEN_MIN
from shared.protocol.codec import (
    ProtocolError,
    obj,
    only_keys,
    opt_int,
    opt_str,
    req_bool,
    req_enum,
    req_int,
    req_list,
    req_str,
    req_terminal_id,
)
from shared.protocol.messages import (
    CARD_STATUSES,
    MAX_ITEMS_PER_SALE,
    MAX_SALE_FEN,
    MEAL_PERIODS,
    RESULT_STATUSES,
    Balance,
    CardChange,
    HolderChange,
    Meals,
    Sale,
    SaleResult,
    decode_change,
    item_by_readers,
    sale_by_readers,
)


def reference_meals(m: Any) -> Meals:
    """Meals.from_wire as the readers alone decide it (the specification)."""
    m = obj(m, "meals")
    only_keys(m, frozenset({"day", "taken"}), "meals")
    day = req_str(m, "day", max_len=10)
    digits = day[:4] + day[5:7] + day[8:]
    if len(day) != 10 or day[4] != "-" or day[7] != "-" or not (digits.isascii() and digits.isdigit()):
        raise ProtocolError("bad_field", f"meals.day: {day!r} is not YYYY-MM-DD")
    taken = obj(m.get("taken"), "meals.taken")
    if len(taken) > 1000:
        raise ProtocolError("bad_field", "meals.taken: more than 1000 canteens")
    for canteen_id, periods in taken.items():
        if not canteen_id or len(canteen_id) > 64:
            raise ProtocolError("bad_field", f"meals.taken: canteen id {canteen_id!r}")
        periods = obj(periods, f"meals.taken[{canteen_id}]")
        for period in periods:
            if period not in MEAL_PERIODS:
                raise ProtocolError("bad_field", f"meals.taken[{canteen_id}]: period {period!r}")
            req_int(periods, period, lo=0, hi=10_000)
    return Meals(day, taken)


def reference_holder(c: dict[str, Any]) -> HolderChange:
    """HolderChange.from_wire as the readers alone decide it (the specification)."""
    h, u = req_str(c, "holder_id", max_len=64), req_str(c, "unit_id", max_len=64)
    sub = req_int(c, "subsidy_fen", lo=FEN_MIN, hi=FEN_MAX)
    own = req_int(c, "self_fen", lo=FEN_MIN, hi=FEN_MAX)
    blocked = req_bool(c, "blocked")
    year, nxt, old = c.get("subsidy_year"), c.get("next_subsidy_fen", 0), c.get("expired_subsidy_fen", 0)
    if year is not None or nxt != 0 or old != 0:
        year = req_int(c, "subsidy_year", lo=2000, hi=2200)
        nxt = req_int(c, "next_subsidy_fen", lo=FEN_MIN, hi=FEN_MAX)
        old = opt_int(c, "expired_subsidy_fen", lo=FEN_MIN, hi=FEN_MAX) or 0
    meals = reference_meals(c["meals"]) if "meals" in c else None
    return HolderChange(h, u, sub, own, blocked, meals, year, nxt, old)


def verdict(decode: Any, value: Any) -> Any:
    try:
        return decode(value)
    except ProtocolError as exc:
        return (exc.code, exc.detail)


ODD = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        1999,
        2000,
        2200,
        2201,
        FEN_MAX,
        FEN_MAX + 1,
        FEN_MIN - 1,
        10_000,
        10_001,
        "",
        "x",
        "2026",
        "a\x00",
        [],
        {},
        "h" * 65,
    ]
)
DELETE = object()


def edit(target: dict[str, Any], key: str, value: Any) -> None:
    """Set ``target[key]`` to ``value``, or remove the key when ``value`` is DELETE."""
    if value is DELETE:
        target.pop(key, None)
    else:
        target[key] = value


def good_holder() -> dict[str, Any]:
    return {
        "kind": "holder",
        "holder_id": "H1",
        "unit_id": "U1",
        "subsidy_fen": 100,
        "self_fen": -5,
        "blocked": False,
        "subsidy_year": 2026,
        "next_subsidy_fen": 0,
        "expired_subsidy_fen": 7,
        "meals": {"day": "2026-01-06", "taken": {"C01": {"lunch": 1, "dinner": 2}}},
    }


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "holder_id",
                    "unit_id",
                    "subsidy_fen",
                    "self_fen",
                    "blocked",
                    "subsidy_year",
                    "next_subsidy_fen",
                    "expired_subsidy_fen",
                    "meals.lunch",
                    "meals.taken",
                    "meals.day",
                ]
            ),
            ODD | st.just(DELETE),
        ),
        max_size=3,
    )
)
def test_a_holder_change_decodes_as_the_readers_decide(edits: list[tuple[str, Any]]) -> None:
    c = good_holder()
    for field, value in edits:
        target, key = c, field
        if field == "meals.lunch":
            meals = c.get("meals")
            taken = meals.get("taken") if isinstance(meals, dict) else None
            periods = taken.get("C01") if isinstance(taken, dict) else None
            if not isinstance(periods, dict):
                continue
            target, key = periods, "lunch"
        elif field.startswith("meals.") and isinstance(c.get("meals"), dict):
            target, key = c["meals"], field[len("meals.") :]
        elif field.startswith("meals."):
            continue
        edit(target, key, value)
    assert verdict(decode_change, c) == verdict(reference_holder, c)


def reference_card(c: dict[str, Any]) -> CardChange:
    card_id, holder_id = req_str(c, "card_id", max_len=64), req_str(c, "holder_id", max_len=64)
    return CardChange(card_id, holder_id, req_enum(c, "status", CARD_STATUSES))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["card_id", "holder_id", "status"]),
            ODD | st.just("lost") | st.just(DELETE),
        ),
        max_size=2,
    )
)
def test_a_card_change_decodes_as_the_readers_decide(edits: list[tuple[str, Any]]) -> None:
    c: dict[str, Any] = {"kind": "card", "card_id": "K1", "holder_id": "H1", "status": "active"}
    for field, value in edits:
        edit(c, field, value)
    assert verdict(decode_change, c) == verdict(reference_card, c)


def reference_sale(d: Any) -> Sale:
    """Sale.from_dict as the readers alone decide it (the specification)."""
    d = obj(d, "sale")
    only_keys(d, frozenset(Sale.__dataclass_fields__), "sale")
    items = tuple(item_by_readers(i) for i in req_list(d, "items", max_len=MAX_ITEMS_PER_SALE))
    sale = sale_by_readers(d, items)
    sale.validate()
    return sale


SALE_VALUES = [
    None, True, False, 0, 1, -1, 1999, 2000, 2200, 2201, 10_000, 10_001, MAX_SALE_FEN, MAX_SALE_FEN + 1,
    2**53, 2**53 + 1, -(2**53), "", "x", "a\x00", "T-1_a", "T.1", "lunch", "snack", "card", "ecny",
    "qr", "meal", "shop", [], {}, [{"sku": "x", "qty": 1, "unit_price_fen": 500}],
    *("s" * n for n in (15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257)),
]  # fmt: skip


def good_sale(shop: bool) -> dict[str, Any]:
    return Sale(
        "T1", 7, "u" * 32, "K1", "C01", 500, 1_767_672_000_000, kind="shop" if shop else "meal",
        meal_period=None if shop else "lunch", subsidy_fen=200, self_fen=300, credential="q",
    ).to_dict()  # fmt: skip


def test_every_field_at_every_odd_value_decodes_as_the_readers_decide() -> None:
    for shop in (False, True):
        for field in [*Sale.__dataclass_fields__, "extra"]:
            for value in [*SALE_VALUES, DELETE]:
                d = good_sale(shop)
                edit(d, field, value)
                assert verdict(Sale.from_dict, d) == verdict(reference_sale, d), (field, value)


SALE_ODD = ODD | st.sampled_from(
    [
        MAX_SALE_FEN,
        MAX_SALE_FEN + 1,
        2**53,
        2**53 + 1,
        "T-1_a",
        "T.1",
        "t" * 32,
        "t" * 33,
        "lunch",
        "snack",
        "p" * 16,
        "p" * 17,
        "c" * 256,
        "c" * 257,
        "card",
        "ecny",
        "meal",
        "shop",
        [{"sku": "x", "qty": 1, "unit_price_fen": 500}],
    ]
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*Sale.__dataclass_fields__, "extra"]),
            SALE_ODD | st.just(DELETE),
        ),
        max_size=3,
    ),
    st.booleans(),
)
def test_a_sale_decodes_as_the_readers_decide(edits: list[tuple[str, Any]], shop: bool) -> None:
    d = good_sale(shop)
    for field, value in edits:
        edit(d, field, value)
    assert verdict(Sale.from_dict, d) == verdict(reference_sale, d)


def reference_balance(d: Any) -> Balance:
    """Balance.from_dict as the readers alone decide it (the specification)."""
    d = obj(d, "balance")
    only_keys(d, frozenset(Balance.__dataclass_fields__), "balance")
    return Balance(
        req_int(d, "subsidy_fen", lo=FEN_MIN, hi=FEN_MAX),
        req_int(d, "self_fen", lo=FEN_MIN, hi=FEN_MAX),
        req_int(d, "version"),
        opt_int(d, "subsidy_year", lo=2000, hi=2200),
        opt_int(d, "next_subsidy_fen", lo=FEN_MIN, hi=FEN_MAX) or 0,
        opt_int(d, "expired_subsidy_fen", lo=FEN_MIN, hi=FEN_MAX) or 0,
    )


def reference_result(d: Any) -> SaleResult:
    """SaleResult.from_dict (a terminal reading an ack: an unreadable balance dropped) as
    the readers alone decide it; returns the result and the faults."""
    faults: list[ProtocolError] = []
    d = obj(d, "result")
    only_keys(d, frozenset(SaleResult.__dataclass_fields__), "result")
    fields = (
        req_terminal_id(d, "terminal_id"),
        req_int(d, "seq", lo=1),
        req_str(d, "uuid", max_len=64),
        req_enum(d, "status", RESULT_STATUSES),
        opt_str(d, "reason", max_len=64),
        req_int(d, "subsidy_fen"),
        req_int(d, "self_fen"),
        req_int(d, "overdraft_fen"),
        opt_str(d, "holder_id", max_len=64),
    )
    balance = None
    if d.get("balance") is not None:
        try:
            balance = reference_balance(d["balance"])
        except ProtocolError as exc:
            faults.append(exc)
    return SaleResult(*fields, balance), [(f.code, f.detail) for f in faults]  # type: ignore[return-value]


def decoded_result(d: Any) -> Any:
    faults: list[ProtocolError] = []
    return SaleResult.from_dict(d, faults), [(f.code, f.detail) for f in faults]


def good_result() -> dict[str, Any]:
    return {
        "terminal_id": "T-1",
        "seq": 7,
        "uuid": "u" * 32,
        "status": "applied",
        "reason": None,
        "subsidy_fen": 200,
        "self_fen": 1000,
        "overdraft_fen": 0,
        "holder_id": "H1",
        "balance": {
            "subsidy_fen": 100,
            "self_fen": -5,
            "version": 9,
            "subsidy_year": 2026,
            "next_subsidy_fen": 0,
            "expired_subsidy_fen": 0,
        },
    }


RESULT_FIELDS = [
    *SaleResult.__dataclass_fields__,
    "extra",
    *(f"balance.{k}" for k in Balance.__dataclass_fields__),
]
RESULT_ODD = SALE_ODD | st.sampled_from(
    ["applied", "duplicate", "rejected", "quarantined", FEN_MIN, "u" * 64, "u" * 65]
)


def _edit_result(edits: list[tuple[str, Any]]) -> dict[str, Any]:
    d = good_result()
    for field, value in edits:
        target, key = d, field
        if field.startswith("balance."):
            target, key = d.get("balance"), field.split(".", 1)[1]
            if not isinstance(target, dict):
                continue
        edit(target, key, value)
    return d


def test_every_result_field_at_every_odd_value_decodes_as_the_readers_decide() -> None:
    for field in RESULT_FIELDS:
        for value in [*SALE_VALUES, "applied", FEN_MAX, FEN_MAX + 1, FEN_MIN, FEN_MIN - 1, DELETE]:
            d = _edit_result([(field, value)])
            assert verdict(decoded_result, d) == verdict(reference_result, d), (field, value)


@given(st.lists(st.tuples(st.sampled_from(RESULT_FIELDS), RESULT_ODD | st.just(DELETE)), max_size=3))
def test_a_result_decodes_as_the_readers_decide(edits: list[tuple[str, Any]]) -> None:
    d = _edit_result(edits)
    assert verdict(decoded_result, d) == verdict(reference_result, d)
    balance = d.get("balance")
    if balance is not None:
        assert verdict(Balance.from_dict, balance) == verdict(reference_balance, balance)
