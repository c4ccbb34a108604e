"""Round 2 of the protocol's fast paths, each pinned to its general path: the envelope's
one-expression check (:func:`shared.protocol.envelope._parse`) against the field readers
(:func:`~shared.protocol.envelope._parse_by_readers`), an item's against
:func:`~shared.protocol.messages.item_by_readers`, a meal day's regular expression against
the readers' checks, :func:`~shared.protocol.codec.only_keys`' early return, and
:func:`shared.clock.china_day`'s per-hour memo against :func:`~shared.clock.china_day_computed`
— the same record, or the same error code and detail, on any value of any field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import clock
from shared.protocol import envelope
from shared.protocol.codec import ProtocolError, only_keys, parse_json
from shared.protocol.messages import MAX_SALE_FEN, Item, Meals, Sale, item_by_readers
from tests.test_decode_fast_path import DELETE, edit, reference_meals


def verdict(decode: Any, *args: Any) -> Any:
    try:
        return decode(*args)
    except ProtocolError as exc:
        return (exc.code, exc.detail)


ODD_VALUES = [
        None, True, False, 0, 1, -1, 2, 1000, 1001, MAX_SALE_FEN, MAX_SALE_FEN + 1, 2**53, 2**53 + 1,
        "", "x", "a\x00", "T-1_a", "T.1", "t" * 32, "t" * 33, "s" * 64, "s" * 65, "m" * 200, "m" * 201,
        "server", "sale_batch", "ack", "delta", "nonsense", "hmac-sha256:ab", [], {}, {"a": 1}, [1],
]  # fmt: skip
ODD = st.sampled_from(ODD_VALUES)

GOOD_ENVELOPE: dict[str, Any] = {
    "schema_version": 1,
    "type": "sale_batch",
    "sender": "T-1_a",
    "msg_id": "526239cde2484832b0860762042a655e",
    "sent_at_ms": 1_798_603_593_597,
    "body": {"sales": []},
    "sig": "hmac-sha256:" + "0" * 64,
}


def parsed_by_readers(data: bytes) -> Any:
    raw, env, sig = envelope._parse_by_readers(parse_json(data))
    return raw, env, sig


@given(
    st.lists(
        st.tuples(st.sampled_from([*GOOD_ENVELOPE, "extra"]), ODD | st.just(DELETE)),
        max_size=3,
    )
)
def test_an_envelope_parses_as_the_readers_decide(edits: list[tuple[str, Any]]) -> None:
    d = dict(GOOD_ENVELOPE)
    for key, value in edits:
        edit(d, key, value)
    data = orjson.dumps(d)
    assert verdict(envelope._parse, data) == verdict(parsed_by_readers, data)


def test_every_envelope_field_at_every_odd_value_parses_as_the_readers_decide() -> None:
    for key in [*GOOD_ENVELOPE, "extra"]:
        for value in [*ODD_VALUES, DELETE]:
            d = dict(GOOD_ENVELOPE)
            edit(d, key, value)
            data = orjson.dumps(d)
            assert verdict(envelope._parse, data) == verdict(parsed_by_readers, data), (key, value)
    for data in (b"[]", b"1", b'"x"', b"null", b"{}"):  # not an object at all
        assert verdict(envelope._parse, data) == verdict(parsed_by_readers, data)


GOOD_ITEM: dict[str, Any] = {"sku": "water", "qty": 2, "unit_price_fen": 200, "reference_price_fen": 250}


@given(
    st.lists(
        st.tuples(st.sampled_from([*GOOD_ITEM, "extra"]), ODD | st.just(DELETE)),
        max_size=3,
    )
)
def test_an_item_decodes_as_the_readers_decide(edits: list[tuple[str, Any]]) -> None:
    d = dict(GOOD_ITEM)
    for key, value in edits:
        edit(d, key, value)
    assert verdict(Item.from_dict, d) == verdict(item_by_readers, d)


def test_every_item_field_at_every_odd_value_decodes_as_the_readers_decide() -> None:
    for key in [*GOOD_ITEM, "extra"]:
        for value in [*ODD_VALUES, DELETE]:
            d = dict(GOOD_ITEM)
            edit(d, key, value)
            assert verdict(Item.from_dict, d) == verdict(item_by_readers, d), (key, value)


@pytest.mark.parametrize("value", [None, [], "x", 1, [GOOD_ITEM]])
def test_an_item_that_is_not_an_object_is_refused_as_the_readers_refuse_it(value: Any) -> None:
    refused = ("bad_field", "item: expected object")
    assert verdict(Item.from_dict, value) == verdict(item_by_readers, value) == refused


DAYS = st.sampled_from(
    ["2026-01-06", "2026-1-06", "2026-01-6 ", "2026/01/06", "２０２６-01-06", "2026-01-0٦", "2026-01-06\n"]
) | st.text(alphabet="0123456789-/٦２ \x00", max_size=11)


@given(DAYS, st.sampled_from([{"C01": {"lunch": 1}}, {"C01": []}, {"": {}}, {"C01": {"tea": 1}}]))
def test_a_meal_day_decodes_as_the_readers_decide(day: str, taken: dict[str, Any]) -> None:
    m = {"day": day, "taken": taken}
    assert verdict(Meals.from_wire, m) == verdict(reference_meals, m)


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(), max_size=5),
    st.frozensets(st.sampled_from(["a", "b", "c"])),
)
def test_only_keys_refuses_exactly_the_unknown_fields(d: dict[str, int], allowed: frozenset[str]) -> None:
    extra = sorted(set(d) - allowed)
    expected = ("bad_field", f"x: unknown field(s) {extra}") if extra else None
    assert verdict(only_keys, d, allowed, "x") == expected


# the summer time of 1986-1991 (+9), its changes at 02:00 local, and plain hours either side
DST_EDGES = [
    int(datetime.fromisoformat(text).timestamp() * 1000)
    for text in (
        "1986-05-03T17:59:59.999+00:00",
        "1986-05-03T18:00:00+00:00",
        "1986-09-13T16:59:59.999+00:00",
        "1986-09-13T17:00:00+00:00",
        "1986-09-13T17:30:00+00:00",
        "1986-09-13T18:00:00+00:00",
        "1991-09-14T16:00:00+00:00",
        "1991-09-14T17:00:00+00:00",
        "2026-01-05T15:59:59.999+00:00",
        "2026-01-05T16:00:00+00:00",
        "2026-01-05T17:00:00+00:00",
        "1988-07-01T14:30:00+00:00",  # midnight at 15:00 UTC in the summer time
        "1988-07-01T15:30:00+00:00",
        # local mean time (+8:05:43) until 1901: midnight is not on a UTC hour
        "1900-01-01T15:54:16.999+00:00",
        "1900-01-01T15:54:17+00:00",
        "1900-01-01T15:00:00+00:00",
        "1900-01-01T16:00:00+00:00",
    )
]


def test_china_day_at_each_edge_after_every_other_edge() -> None:
    for first in DST_EDGES:
        for then in DST_EDGES:
            clock._china_day_of_hour.cache_clear()
            clock.china_day(first)
            assert clock.china_day(then) == clock.china_day_computed(then), (first, then)
            assert clock.china_minute_of_day(then) == wall_minute(then), (first, then)


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=-(2**42), max_value=253_402_214_399_999),  # to 9999-12-31 in UTC+8
            st.sampled_from(DST_EDGES),
            st.integers(min_value=0, max_value=3_599_999).map(lambda x: 1_767_628_800_000 + x),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_china_day_is_the_computed_day_whatever_was_asked_before(times: list[int]) -> None:
    for ms in times:  # the memo filled by the ones before
        assert clock.china_day(ms) == clock.china_day_computed(ms)
        assert clock.china_minute_of_day(ms) == wall_minute(ms)
        assert clock.start_of_china_day_ms(ms) == clock.china_day_computed(ms)[1]


def test_china_day_memo_is_bounded() -> None:
    memo = clock._china_day_of_hour
    memo.cache_clear()
    for hour in range(10):
        ms = 1_767_628_800_000 + hour * 3_600_000
        assert clock.china_day(ms) == clock.china_day_computed(ms)
    assert memo.cache_info().currsize == 10 and memo.cache_info().maxsize == 65_536


def test_china_day_of_a_day_and_its_edges() -> None:
    midnight = 1_767_628_800_000  # 2026-01-06 00:00 in Beijing
    eight = 8 * 3_600_000
    assert clock.china_day(midnight) == (2026, midnight, "2026-01-06", eight)
    assert clock.china_day(midnight - 1) == (2026, midnight - 86_400_000, "2026-01-05", eight)
    assert clock.china_day(midnight + 86_399_999) == (2026, midnight, "2026-01-06", eight)
    assert clock.china_minute_of_day(midnight + 86_399_999) == 1439
    summer = int(datetime.fromisoformat("1988-07-01T15:30:00+00:00").timestamp() * 1000)
    assert clock.china_day(summer).utc_offset_ms == 9 * 3_600_000
    assert clock.china_minute_of_day(summer) == 30  # 00:30 the next day, in summer time


def wall_minute(ms: int) -> int:
    dt = clock.china_datetime(ms)
    return dt.hour * 60 + dt.minute


def sale_dict_by_fields(sale: Sale) -> dict[str, Any]:
    """Sale.to_dict as the dataclass's fields define it (the specification)."""
    d = {name: getattr(sale, name) for name in Sale.__dataclass_fields__}
    d["items"] = [i.to_dict() for i in sale.items]
    if sale.pin_approval is None:
        del d["pin_approval"]
    return d


TEXT_OR_NONE = st.none() | st.text(max_size=3)


@given(
    st.builds(
        Sale,
        terminal_id=st.text(max_size=3),
        seq=st.integers(),
        uuid=st.text(max_size=3),
        card_id=TEXT_OR_NONE,
        canteen_id=st.text(max_size=3),
        amount_fen=st.integers(),
        occurred_at_ms=st.integers(),
        method=st.text(max_size=3),
        kind=st.text(max_size=3),
        meal_period=TEXT_OR_NONE,
        items=st.lists(
            st.builds(Item, st.text(max_size=3), st.integers(), st.integers(), st.none() | st.integers()),
            max_size=3,
        ).map(tuple),
        offline=st.booleans(),
        visitor=st.booleans(),
        subsidy_fen=st.integers(),
        self_fen=st.integers(),
        credential=TEXT_OR_NONE,
        pin_approval=TEXT_OR_NONE,
    )
)
def test_a_sale_to_dict_is_its_fields(sale: Sale) -> None:
    d = sale.to_dict()
    assert d == sale_dict_by_fields(sale)
    assert list(d) == list(sale_dict_by_fields(sale))  # the same order too
