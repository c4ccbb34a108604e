"""The decoders build their well-formed records with :func:`shared.protocol.codec.frozen_record`
(the instance's ``__dict__`` set in one step) instead of the dataclass's ``__init__``: the
records are the constructor's in every respect a caller can see — equal, same hash, repr,
attributes in the same order, pickled, copied, replaced and converted alike — and the
decoders' field dicts name every field, in declaration order."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.protocol.codec import frozen_record
from shared.protocol.envelope import Envelope, _parse, seal_hmac
from shared.protocol.messages import Balance, Item, Sale, SaleResult

RECORDS = (Sale, SaleResult, Balance, Envelope)

values = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.tuples(st.integers())


def test_the_records_built_in_one_step_have_no_slots_post_init_or_init_vars() -> None:
    for cls in RECORDS:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert "__slots__" not in cls.__dict__ and not hasattr(cls, "__post_init__")
        assert all(f.init and f._field_type is dataclasses._FIELD for f in dataclasses.fields(cls))  # type: ignore[attr-defined]


@given(st.sampled_from(RECORDS), st.data())
def test_a_record_set_in_one_step_is_the_constructors(cls: type, data: st.DataObject) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    given_values = [data.draw(values) for _ in names]
    built = cls(*given_values)
    fast = frozen_record(cls, dict(zip(names, given_values, strict=True)))
    assert type(fast) is cls
    assert fast == built and not (fast != built)
    assert repr(fast) == repr(built)
    assert list(vars(fast).items()) == list(vars(built).items())
    assert hash(fast) == hash(built)
    assert pickle.loads(pickle.dumps(fast)) == built
    assert copy.copy(fast) == built and copy.deepcopy(fast) == built
    assert dataclasses.astuple(fast) == dataclasses.astuple(built)
    assert dataclasses.replace(fast) == built
    try:
        setattr(fast, names[0], 1)
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a record set in one step must stay frozen")


def same_record(fast: Any, cls: type, **defaults: Any) -> None:
    """``fast`` (a decoder's) has every field of ``cls`` in order and equals the constructor's."""
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(vars(fast)) == names
    assert fast == cls(**{n: getattr(fast, n) for n in names})


@given(
    st.integers(1, 2**53),
    st.sampled_from([None, "K1"]),
    st.booleans(),
    st.sampled_from([None, "pin-1"]),
    st.lists(st.tuples(st.integers(1, 3), st.integers(1, 500)), max_size=3),
)
def test_the_decoders_field_dicts_name_every_field_in_order(
    seq: int, card: str | None, offline: bool, pin: str | None, items: list[tuple[int, int]]
) -> None:
    lines = [Item(f"S{i}", qty, price) for i, (qty, price) in enumerate(items)]
    amount = sum(i.qty * i.unit_price_fen for i in lines) or 100
    sale = Sale(
        "T1", seq, "u1", card or "K2", "C01", amount, 5, "card", "meal", "lunch", tuple(lines),
        offline, False, amount, 0, None, pin,
    )  # fmt: skip
    same_record(Sale.from_dict(sale.to_dict()), Sale)
    assert Sale.from_dict(sale.to_dict()) == sale
    balance = Balance(1, 2, seq, 2026, 3, 4)
    same_record(Balance.from_dict(balance.to_dict()), Balance)
    result = SaleResult("T1", seq, "u1", "applied", None, 1, 2, 0, card, balance)
    same_record(SaleResult.from_dict(result.to_dict(), []), SaleResult)
    assert SaleResult.from_dict(result.to_dict(), []) == result
    _, env, _ = _parse(seal_hmac("ack", "server", {"x": seq}, b"k" * 32, seq, "m1"))
    same_record(env, Envelope)
    assert env == Envelope("ack", "server", "m1", seq, {"x": seq})
