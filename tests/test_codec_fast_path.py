"""The fast type check in canonical_json gives exactly the old verdicts (same error, same
depth limit) on anything, including floats, odd keys and deep nesting."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.protocol.codec import ProtocolError, _check_types


def reference(obj: Any, depth: int = 0) -> None:
    """The original recursive check, kept here as the specification."""
    if depth > 32:
        raise ProtocolError("malformed", "nesting too deep")
    if obj is None or isinstance(obj, (bool, int, str)):
        return
    if isinstance(obj, float):
        raise ProtocolError("malformed", "float not allowed")
    if isinstance(obj, (list, tuple)):
        for v in obj:
            reference(v, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ProtocolError("malformed", "object keys must be strings")
            reference(v, depth + 1)
        return
    raise ProtocolError("malformed", f"type {type(obj).__name__} not allowed")


def verdict(check: Any, obj: Any) -> str | None:
    try:
        check(obj)
    except ProtocolError as exc:
        return exc.detail
    return None


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=3)
    | st.floats(allow_nan=False)
    | st.binary(max_size=2)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=2) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=20,
)


@given(values)
def test_fast_check_agrees_with_the_reference(obj: Any) -> None:
    assert verdict(_check_types, obj) == verdict(reference, obj)


def nest(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


@given(st.integers(28, 36), st.sampled_from([1, "x", None, 1.5, [], {}]))
def test_depth_limit_is_unchanged(depth: int, leaf: Any) -> None:
    obj = nest(depth, leaf)
    assert verdict(_check_types, obj) == verdict(reference, obj)


@given(
    st.sampled_from(["sale_batch", "ack", "status", "delta", "snapshot"]),
    st.text(max_size=8),
    st.dictionaries(
        st.text(max_size=6),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=5) | st.booleans(),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=4,
    ),
    st.integers(0, 2**53),
)
def test_a_sealed_envelope_is_exactly_the_canonical_encoding_with_its_signature(
    type_: str, sender: str, body: dict, at: int
) -> None:
    import json

    from shared.protocol import canonical_json, seal_hmac

    sealed = seal_hmac(type_, sender or "T", body, b"k" * 32, at, "m1")
    assert sealed == canonical_json(json.loads(sealed))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab{["\\é', max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


def encoded(check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ProtocolError as exc:
        return exc.detail


deep = st.builds(nest, st.integers(28, 36), st.sampled_from([1, "x", None, [], {}]))


@given(json_values | deep, st.booleans())
def test_encoding_what_was_parsed_agrees_with_canonical_json(value: Any, as_bytes: bool) -> None:
    import json

    from shared.protocol.codec import canonical_json, canonical_json_of_parsed, parse_json

    text = json.dumps(value, ensure_ascii=False)
    source = text.encode() if as_bytes else text
    parsed = parse_json(source)
    assert encoded(canonical_json_of_parsed, parsed, source) == encoded(canonical_json, parsed)
