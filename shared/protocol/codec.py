"""Canonical JSON and the field readers every message decoder uses.

Canonical form: ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
encoded as UTF-8. Only dicts with string keys, lists, strings, ints, bools and null are
allowed; a float (or NaN) is malformed. Decoding the same bytes twice and re-encoding gives
the same bytes, which is what signatures are computed over.

orjson encodes and parses the common case (several times faster than the stdlib ``json``);
every input it would treat differently goes to the stdlib path, which stays the
definition: the bytes and the verdicts are the stdlib's (tests/test_codec_orjson.py).
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import orjson

from shared.errors import DomainError

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 1_048_576  # 1 MiB: far above a full sale batch, far below a memory problem
# A snapshot (HTTP, one terminal, on a fresh start or after a gap) carries the whole city:
# ~100 bytes per holder and per card, ~770 per enrolled face — 50,000 staff with faces is
# ~50 MB. It is bounded separately; MQTT messages keep the small bound.
MAX_SNAPSHOT_BYTES = 256 * 1_048_576


class ProtocolError(DomainError):
    """A message that cannot be accepted; ``code`` is stable, ``detail`` names the field."""


def _reject_float(value: str) -> Any:
    raise ProtocolError("malformed", f"float {value} not allowed")


def _reject_constant(value: str) -> Any:
    raise ProtocolError("malformed", f"{value} not allowed")


def _not_json(value: Any) -> Any:
    raise ProtocolError("malformed", f"type {type(value).__name__} not allowed")


# The encoder ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` builds
# on every call, built once (the same C encoder, the same bytes: the golden fixtures in
# tests/test_protocol.py pin them). No circular-reference markers: _check_types has already
# refused anything nested deeper than 32, which a cycle would be.
if json.encoder.c_make_encoder is not None:
    _encoder = json.encoder.c_make_encoder(
        None, _not_json, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )

    def _encode(obj: Any) -> str:
        return "".join(_encoder(obj, 0))

else:  # pragma: no cover - CPython always has the C encoder
    _encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800" parses to one): no UTF-8
        raise ProtocolError("malformed", "text with a lone surrogate") from exc


def _encode_stdlib(obj: Any) -> bytes:
    """The canonical bytes as the stdlib encoder makes them: the definition."""
    return _utf8(_encode(obj))


def _encode_exact(obj: Any) -> bytes:
    """:func:`_encode_stdlib` of ``obj``, which holds only exact dict/list/tuple/str/int/
    bool/None (no subclass, no float), at most 32 deep. For those, orjson with sorted keys
    writes the stdlib's bytes: the same escapes (``\\uXXXX`` lowercase for the other control
    characters, U+007F, U+2028 and U+2029 as they are), keys in code-point order (UTF-8
    byte order). What it refuses — an int beyond 64 bits, a lone surrogate — the stdlib
    path encodes or refuses as before."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _encode_stdlib(obj)


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` canonically; raises ProtocolError on floats or non-JSON types."""
    return _encode_exact(obj) if _check_types(obj) else _encode_stdlib(obj)


def canonical_json_of_parsed(obj: Any, source: bytes | str) -> bytes:
    """:func:`canonical_json` of ``obj``, which :func:`parse_json` returned from ``source``
    (or a part of what it returned): the same bytes and the same verdict. Parsed JSON holds
    only JSON's own types, so the type check can only fail on nesting deeper than 32,
    which takes at least 33 brackets in the source (a bracket inside a string only adds
    to the count): a source with fewer is not walked again. Opening a message re-encodes
    it to check its signature; most are a few containers deep and wide."""
    brackets = (b"{", b"[") if type(source) is bytes else ("{", "[")
    if source.count(brackets[0]) + source.count(brackets[1]) > 32:  # type: ignore[arg-type]
        return canonical_json(obj)
    return _encode_exact(obj)


_PLAIN = frozenset({str, int, bool, type(None)})


def _check_types(obj: Any, depth: int = 0) -> bool:
    """Refuse anything but JSON's own types (a float anywhere is malformed), at most 32 deep;
    return whether all of it is of the exact types (no subclass of str, int, dict, list or
    tuple: the stdlib encoder calls a subclass's own methods, orjson does not).

    The loops skip exact str/int/bool/None values without a call — the same verdict as
    the general path below (which they would reach at depth ≤ 32), at a fraction of the
    cost on every message the server verifies and every ack it signs."""
    kind = type(obj)
    if kind is dict and depth < 32:
        exact = True
        for k, v in obj.items():
            if type(k) is not str:
                raise ProtocolError("malformed", "object keys must be strings")
            if type(v) not in _PLAIN and not _check_types(v, depth + 1):
                exact = False
        return exact
    if (kind is list or kind is tuple) and depth < 32:
        exact = True
        for v in obj:
            if type(v) not in _PLAIN and not _check_types(v, depth + 1):
                exact = False
        return exact
    return _check_types_general(obj, depth)


def _check_types_general(obj: Any, depth: int) -> bool:
    if depth > 32:
        raise ProtocolError("malformed", "nesting too deep")
    kind = type(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return kind in _PLAIN
    if isinstance(obj, float):
        raise ProtocolError("malformed", "float not allowed")
    if isinstance(obj, (list, tuple)):
        exact = kind is list or kind is tuple
        for v in obj:
            if not _check_types(v, depth + 1):
                exact = False
        return exact
    if isinstance(obj, dict):
        exact = kind is dict
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ProtocolError("malformed", "object keys must be strings")
            if not _check_types(v, depth + 1) or type(k) is not str:
                exact = False
        return exact
    raise ProtocolError("malformed", f"type {type(obj).__name__} not allowed")


# what json.loads(text, parse_float=…, parse_constant=…) builds on every call, built once
_decoder = json.JSONDecoder(parse_float=_reject_float, parse_constant=_reject_constant)


def parse_json(data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Parse wire bytes strictly: size-capped, UTF-8, no floats, no NaN/Infinity.

    orjson parses; what it refuses, and what it parses to a float (a float, or an int
    beyond 64 bits, which it turns into one) or deeper than 32, the stdlib parser decides
    (:func:`_parse_stdlib`, the definition): the same values and the same refusals."""
    data = _sized(data, max_bytes)
    if type(data) is bytes:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _parse_stdlib(data)  # refused, or a lone surrogate or a huge int: see there
        kind = type(value)
        if kind is float or ((kind is dict or kind is list) and _float_or_deep(value, 0)):
            return _parse_stdlib(data)
        return value
    return _parse_stdlib(data)


def _sized(data: bytes | str, max_bytes: int) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    if len(data) > max_bytes:
        raise ProtocolError("too_large", f"{len(data)} bytes")
    return data


def _parse_stdlib(data: bytes) -> Any:
    """What :func:`parse_json` returns for ``data`` (within the size bound): the stdlib's
    strict parse, refusing floats and NaN/Infinity."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed", "not UTF-8") from exc
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _decoder.decode(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("malformed", f"not JSON: {exc}") from exc


def _float_or_deep(value: dict[str, Any] | list[Any], depth: int) -> bool:
    """Whether parsed ``value`` (at ``depth``) holds a float or a container deeper than 32
    (which the stdlib parser, recursing, might refuse where orjson would not)."""
    for v in value.values() if type(value) is dict else value:
        if type(v) in _FLOAT_OR_NESTED:  # one test for the common str, int, bool, None
            if type(v) is float or depth == 32 or _float_or_deep(v, depth + 1):
                return True
    return False


_FLOAT_OR_NESTED = frozenset({float, dict, list})


# --- decoded records -----------------------------------------------------------------------

R = TypeVar("R")
_new_object = object.__new__
_set_attribute = object.__setattr__


def frozen_record(cls: type[R], fields: dict[str, Any]) -> R:
    """``cls(**fields)`` for a frozen dataclass without ``__slots__``, ``__post_init__`` or
    ``InitVar``, given every field (defaults too) in declaration order: the instance with that
    ``__dict__``, set in one step. The generated ``__init__`` sets each field through
    ``object.__setattr__`` (frozen), which was most of the cost of decoding a sale (17
    fields) once its checks had passed. Equal, hashed, printed and pickled alike
    (tests/test_protocol_messages_fast_records.py); only the decoders' well-formed cases use it."""
    record = _new_object(cls)
    _set_attribute(record, "__dict__", fields)
    return record


# --- field readers: each raises ProtocolError("bad_field", "<name>: why") -----------------


def obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError("bad_field", f"{name}: expected object")
    return value


def req_str(d: dict[str, Any], key: str, *, max_len: int = 128, allow_empty: bool = False) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise ProtocolError("bad_field", f"{key}: expected string")
    if (not v and not allow_empty) or len(v) > max_len:
        raise ProtocolError("bad_field", f"{key}: length out of range")
    if "\x00" in v:  # no text in the system holds one, and PostgreSQL cannot store one
        raise ProtocolError("bad_field", f"{key}: contains a NUL character")
    return v


def is_text(v: Any, max_len: int) -> bool:
    """Whether :func:`req_str` (not empty) would accept ``v`` as it is: for a decoder's
    one-expression check of the well-formed case (a str subclass is left to the reader)."""
    return type(v) is str and 0 < len(v) <= max_len and "\x00" not in v


# A terminal id reaches MQTT topic names: only letters, digits, - and _, at most 32 (a "*",
# "." or space acts as a wildcard, is rewritten, or is refused by some brokers; "/", "+", "#"
# are MQTT's own). The one rule for provisioning, message decoding and topic names.
TERMINAL_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def check_terminal_id(value: object, what: str = "terminal id") -> str:
    """``value`` if it is a usable terminal id, else ``bad_terminal_id``."""
    if not isinstance(value, str) or not TERMINAL_ID.fullmatch(value):
        shown = repr(value)[:48] if isinstance(value, str) else type(value).__name__
        raise ProtocolError("bad_terminal_id", f"{what} {shown}: 1-32 letters, digits, - or _")
    return value


def req_terminal_id(d: dict[str, Any], key: str) -> str:
    """A field holding a terminal id (see :data:`TERMINAL_ID`)."""
    return check_terminal_id(req_str(d, key, max_len=64), key)


def opt_str(d: dict[str, Any], key: str, *, max_len: int = 128) -> str | None:
    if d.get(key) is None:
        return None
    return req_str(d, key, max_len=max_len)


INT_MAX = 2**53  # req_int's default upper bound (exact in every JSON reader)


def req_int(d: dict[str, Any], key: str, *, lo: int = 0, hi: int = INT_MAX) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError("bad_field", f"{key}: expected integer")
    if not lo <= v <= hi:
        raise ProtocolError("bad_field", f"{key}: {v} out of range [{lo}, {hi}]")
    return v


def opt_int(d: dict[str, Any], key: str, *, lo: int = 0, hi: int = INT_MAX) -> int | None:
    if d.get(key) is None:
        return None
    return req_int(d, key, lo=lo, hi=hi)


def req_bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key)
    if not isinstance(v, bool):
        raise ProtocolError("bad_field", f"{key}: expected boolean")
    return v


def req_enum(d: dict[str, Any], key: str, allowed: frozenset[str]) -> str:
    v = d.get(key)
    if not isinstance(v, str) or v not in allowed:  # a list or dict is not even hashable
        raise ProtocolError("bad_field", f"{key}: expected one of {sorted(allowed)}")
    return v  # type: ignore[return-value]


def req_list(d: dict[str, Any], key: str, *, max_len: int) -> list[Any]:
    v = d.get(key)
    if not isinstance(v, list):
        raise ProtocolError("bad_field", f"{key}: expected list")
    if len(v) > max_len:
        raise ProtocolError("too_large", f"{key}: {len(v)} entries, at most {max_len}")
    return v


def only_keys(d: dict[str, Any], allowed: frozenset[str], name: str) -> None:
    if allowed.issuperset(d):  # the common case, without building the set of extras
        return
    extra = set(d) - allowed
    if extra:
        raise ProtocolError("bad_field", f"{name}: unknown field(s) {sorted(extra)}")
