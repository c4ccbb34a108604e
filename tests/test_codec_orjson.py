"""orjson encodes and parses the wire's JSON, and changes nothing: for any value the
canonical bytes are the stdlib encoder's (signatures are computed over them, and terminals
in the field run the stdlib code), and for any bytes or text parse_json returns the same
value, or refuses with the same error, as the stdlib parser it falls back to."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.protocol.codec import (
    MAX_MESSAGE_BYTES,
    ProtocolError,
    _check_types,
    _parse_stdlib,
    _sized,
    canonical_json,
    canonical_json_of_parsed,
    parse_json,
)

MANY = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stdlib_canonical(obj: Any) -> bytes:
    """canonical_json as it was: the type check, then the stdlib encoder (the specification)."""
    _check_types(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise ProtocolError("malformed", "text with a lone surrogate") from exc


def stdlib_parse(data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """parse_json as it was: the size bound, then the stdlib parser (its fallback)."""
    return _parse_stdlib(_sized(data, max_bytes))


def tagged(value: Any) -> list[Any]:
    """``value`` flattened with every type and every key order spelled out (1 == True in
    Python, and dict equality ignores order); without recursion (it may be 1,000 deep)."""
    out: list[Any] = []
    stack: list[Any] = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            out.append(("dict", len(v)))
            for k, x in reversed(list(v.items())):
                stack += [x, _Key(k)]
        elif type(v) is list:
            out.append(("list", len(v)))
            stack += reversed(v)
        elif type(v) is _Key:
            out.append(("key", v.name))
        else:
            out.append((type(v).__name__, v))
    return out


class _Key:
    def __init__(self, name: str) -> None:
        self.name = name


def outcome(f: Any, *args: Any) -> Any:
    """What ``f`` returns (types spelled out), or which error it raises, with its message."""
    try:
        return ("ok", tagged(f(*args)))
    except ProtocolError as exc:
        return ("refused", exc.code, exc.detail)
    except (UnicodeError, ValueError, AttributeError) as exc:  # raised before: see EDGE_CASES
        return (type(exc).__name__, str(exc))


# --- values: every character class the escaping and the key order care about -------------

SPECIAL_CHARS = [
    *(chr(c) for c in range(0x20)),
    '"',
    "\\",
    "/",
    "\x7f",
    "\x80",
    "\u00e9",
    "\u2028",
    "\u2029",
    "\ud7ff",
    "\ud800",  # lone surrogates: refused by both paths (no UTF-8)
    "\udfff",
    "\ue000",
    "\ufeff",
    "\uffff",
    "\U00010000",
    "\U0001f600",
    "\U0010ffff",
]
chars = st.characters() | st.sampled_from(SPECIAL_CHARS)
texts = st.text(chars, max_size=8)
INT_EDGES = [
    0,
    -1,
    2**53,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    -(2**64),
    10**30,
    -(10**30),
    10**400,
]
ints = st.integers() | st.integers(-(2**80), 2**80) | st.sampled_from(INT_EDGES)


class Level(enum.IntEnum):
    LOW = 1


class Name(str):
    pass


class Shouting(dict):  # type: ignore[type-arg]
    """A dict subclass whose items() differ from its storage: the stdlib encoder asks items()."""

    def items(self) -> Any:
        return [(k.upper(), v) for k, v in super().items()]


class Doubled(list):  # type: ignore[type-arg]
    """A list subclass whose iteration differs from its storage: the stdlib encoder iterates."""

    def __iter__(self) -> Any:
        return iter([*super().__iter__(), *super().__iter__()])


plain_scalars = st.none() | st.booleans() | ints | texts
odd_scalars = st.floats() | st.sampled_from([Level.LOW, Name("x"), b"x", 1j]) | texts.map(Name)


def json_values(scalars: st.SearchStrategy[Any], odd: bool) -> st.SearchStrategy[Any]:
    def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        keys = texts | st.sampled_from(SPECIAL_CHARS)
        out = st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5)
        if odd:
            keys = keys | st.integers(0, 2) | texts.map(Name)
            out = (
                out
                | st.tuples(inner, inner)
                | st.dictionaries(keys, inner, max_size=3)
                | st.dictionaries(texts, inner, max_size=3).map(Shouting)
                | st.lists(inner, max_size=3).map(Doubled)
            )
        return out

    return st.recursive(scalars, containers, max_leaves=25)


def nest(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


deep = st.builds(nest, st.integers(28, 36), st.sampled_from([1, "x", None, [], {}, 1.5, 2**70]))
anything = json_values(plain_scalars | odd_scalars, odd=True) | deep


@MANY
@given(json_values(plain_scalars, odd=False))
@example({"b": 1, "a": 2, "\u00e9": 3, "\U0001f600": 4, "\uffff": 5, "": 6, "A": 7})
@example(['\x00\x01\x1f\x7f\u2028\u2029"\\/\u00e9\U0001f600'])
@example([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -0])
@example({"k": "\ud800"})
@example({"\udfff": 1})
def test_canonical_bytes_are_the_stdlib_encoders(value: Any) -> None:
    assert outcome(canonical_json, value) == outcome(stdlib_canonical, value)


@MANY
@given(anything)
@example(Shouting(a=1))
@example(Doubled([1, "x"]))
@example({"n": Level.LOW, Name("k"): 1})
@example(Shouting({Name("b"): 1, Name("a"): 2}))
@example([float("nan"), float("inf")])
@example({"x": 1.0, 1: 2})
def test_canonical_verdicts_are_the_stdlib_encoders_for_anything(value: Any) -> None:
    """Floats, NaN, non-str keys, subclasses, other types, nesting deeper than 32."""
    assert outcome(canonical_json, value) == outcome(stdlib_canonical, value)


# --- parsing: valid JSON, JSON with floats and huge ints, mutations, random bytes ----------

json_number_values = json_values(
    plain_scalars | st.floats() | st.sampled_from([0.0, -0.0, 1e5, 1e300]), odd=False
)


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    value = draw(json_number_values | deep)
    indent = draw(st.none() | st.integers(0, 2))
    ascii_only = draw(st.booleans())
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate: invalid UTF-8


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(json_texts()))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from(b'{}[]",:.eE+-0123456789 \t\n\r\f\x00\x7f\\u"d8\xef\xbb\xbf\xc3\xa9\xff'))
        how = draw(st.sampled_from(["insert", "replace", "delete"]))
        if how == "insert":
            data.insert(at, byte)
        elif at < len(data):
            if how == "replace":
                data[at] = byte
            else:
                del data[at]
    return bytes(data)


EDGE_CASES = [
    b"10000000000000000000000000000000",  # orjson: a float (1e31); stdlib: the int
    b"-111111111111111111111111111111",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"1" * 400,  # orjson: "number is infinity"; stdlib: the int
    b"1" * 5000,  # beyond int's 4300-digit limit: ValueError from the stdlib, as before
    b"[-0]",
    b"-0.0",
    b"1e5",
    b"1E400",
    b"-1E400",
    b"[1.0]",
    b'{"a":1e-5}',
    b"NaN",
    b"[Infinity]",
    b"-Infinity",
    b'"\\ud800"',  # a lone surrogate escape: the stdlib parses it (the encoder refuses it)
    b'{"\\udc00":1}',
    b'"\\ud800\\u0041"',
    b'"\\ud83d\\ude00"',
    b'"\\u00E9\\u00e9\\/"',
    b'{"a":1,"a":2,"b":3}',  # last wins, in the first one's place
    b'{"b":1,"a":2,"b":3}',
    b"\xef\xbb\xbf[1]",  # BOM
    b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate
    b'"\xc0\xaf"',  # overlong
    b'"\xf4\x90\x80\x80"',  # beyond U+10FFFF
    b'"\xff"',
    b'"\xe2\x82"',  # truncated
    b'"\x7f\xe2\x80\xa8"',
    b'"\x1f"',
    b'"\t"',
    b"\x0c[1]",
    b"[1]\x0b",
    b"\xc2\xa0[1]",
    b" [1] ",
    b"[1] x",
    b"[1,]",
    b"01",
    b"+1",
    b".5",
    b"1.",
    b"",
    b"\x00",
    b"[" * 32 + b"]" * 32,
    b"[" * 33 + b"]" * 33,
    b"[" * 900 + b"]" * 900,
    b"[" * 1024 + b"]" * 1024,
    b"[" * 1025 + b"]" * 1025,
    b'{"a":' * 40 + b"1" + b"}" * 40,
]


@MANY
@given(json_texts() | mutated() | st.binary(max_size=40) | st.sampled_from(EDGE_CASES))
def test_parsing_bytes_agrees_with_the_stdlib_parser(data: bytes) -> None:
    assert outcome(parse_json, data) == outcome(stdlib_parse, data)


@MANY
@given(
    json_texts().map(lambda b: b.decode("utf-8", "surrogatepass")) | st.text(chars, max_size=12),
    st.sampled_from([MAX_MESSAGE_BYTES, 8]),
)
def test_parsing_text_agrees_with_the_stdlib_parser(text: str, max_bytes: int) -> None:
    assert outcome(parse_json, text, max_bytes) == outcome(stdlib_parse, text, max_bytes)


@pytest.mark.parametrize("data", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_each_edge_case_agrees_with_the_stdlib_parser(data: bytes) -> None:
    assert outcome(parse_json, data) == outcome(stdlib_parse, data)
    for other in (bytearray(data), memoryview(data)):  # not bytes: the stdlib path, as before
        assert outcome(parse_json, other) == outcome(stdlib_parse, other)


def test_the_edge_cases_keep_their_values_and_verdicts() -> None:
    """The specific answers, not only agreement: these are what terminals in the field give."""
    assert parse_json(b"10000000000000000000000000000000") == 10**31
    assert type(parse_json(b"18446744073709551616")) is int
    assert parse_json(b"-9223372036854775809") == -(2**63) - 1
    assert parse_json(b"[-0]") == [0]
    assert list(parse_json(b'{"b":1,"a":2,"b":3}').items()) == [("b", 3), ("a", 2)]
    assert parse_json(b'"\\ud800"') == "\ud800"
    for refused in (b"1e5", b"1E400", b"[1.0]", b"NaN", b"\xef\xbb\xbf[1]", b'"\xff"', b'"\x1f"'):
        with pytest.raises(ProtocolError) as info:
            parse_json(refused)
        assert info.value.code == "malformed"
    assert (
        canonical_json(parse_json(b"[10000000000000000000000000000000]"))
        == b"[10000000000000000000000000000000]"
    )
    with pytest.raises(ProtocolError, match="lone surrogate"):
        canonical_json(parse_json(b'"\\ud800"'))
    with pytest.raises(ProtocolError, match="nesting too deep"):
        canonical_json(parse_json(b"[" * 34 + b"]" * 34))


@MANY
@given(json_texts() | st.sampled_from(EDGE_CASES), st.booleans())
def test_re_encoding_what_was_parsed_is_the_stdlib_encoding(data: bytes, as_text: bool) -> None:
    """What open_envelope does to check a signature: parse, then re-encode."""
    source: bytes | str = data.decode("utf-8", "surrogateescape") if as_text else data
    try:
        parsed = parse_json(source)
    except (ProtocolError, UnicodeError, ValueError):
        return  # refused: the parse tests above pin that
    assert outcome(canonical_json_of_parsed, parsed, source) == outcome(stdlib_canonical, parsed)
