"""Fuzzing the protocol decoder: whatever bytes arrive, the answer is a ProtocolError with a
defined reason code — never another exception (which would kill the thread decoding it).

Hypothesis feeds random bytes, random JSON, envelopes with random fields, and bodies with
the right keys and wrong values to every decoder a terminal or the server runs on input
from the network.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import CATALOG
from shared.protocol import (
    Ack,
    Delta,
    ProtocolError,
    SaleBatch,
    ServerKey,
    ServerVerifier,
    Snapshot,
    Status,
    open_envelope,
    seal_hmac,
)
from shared.protocol.messages import _CHANGE_FIELDS, Sale, SaleResult

FUZZ = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SECRET = b"s" * 32
KEY = ServerKey.generate()
VERIFIER = ServerVerifier(KEY.public_hex)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=40)
    | st.sampled_from(["", "T1", "server", "hmac-sha256:", "ed25519:", "é" * 3, "\ud800"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def fields_of(names: frozenset[str] | set[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with (some of) the right keys and arbitrary values: past the key check,
    into the field readers."""
    return st.fixed_dictionaries({}, optional={k: json_values for k in sorted(names)})


def assert_refused_with_code(decode: Any, *args: Any, **kw: Any) -> None:
    try:
        decode(*args, **kw)
    except ProtocolError as exc:
        assert exc.code in CATALOG, f"refusal code {exc.code!r} is not defined"


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_are_refused_with_a_code(data: bytes) -> None:
    assert_refused_with_code(open_envelope, data, secret_for=lambda s: SECRET, server=VERIFIER)


@FUZZ
@given(json_values)
def test_random_json_is_refused_with_a_code(value: Any) -> None:
    data = json.dumps(value).encode()
    assert_refused_with_code(open_envelope, data, secret_for=lambda s: SECRET, server=VERIFIER)


ENVELOPE_KEYS = {"schema_version", "type", "sender", "msg_id", "sent_at_ms", "body", "sig"}


@FUZZ
@given(fields_of(ENVELOPE_KEYS), st.sampled_from(["T1", "server", None]))
def test_envelopes_with_wrong_fields_are_refused_with_a_code(raw: dict[str, Any], known: str | None) -> None:
    data = json.dumps(raw).encode()
    assert_refused_with_code(
        open_envelope, data, secret_for=lambda s: SECRET if s == known else None, server=VERIFIER
    )


@FUZZ
@given(st.text(max_size=80), st.sampled_from(["status", "sale_batch", "ack", "delta"]))
def test_any_signature_string_is_refused_unless_it_is_the_right_one(sig: str, type_: str) -> None:
    raw = json.loads(seal_hmac(type_, "T1", {}, SECRET, 1, "m1"))
    right = raw["sig"]
    raw["sig"] = sig
    if sig == right:
        return
    assert_refused_with_code(
        open_envelope, json.dumps(raw).encode(), secret_for=lambda s: SECRET, server=VERIFIER
    )


@FUZZ
@given(
    st.one_of(
        fields_of({"sales"}),
        st.fixed_dictionaries(
            {"sales": st.lists(fields_of(set(Sale.__dataclass_fields__)), min_size=1, max_size=3)}
        ),
    )
)
def test_sale_batches_with_wrong_values_are_refused_with_a_code(body: dict[str, Any]) -> None:
    assert_refused_with_code(SaleBatch.from_body, body, "T1")


@FUZZ
@given(
    st.one_of(
        fields_of({"in_reply_to", "results", "reason"}),
        st.fixed_dictionaries(
            {
                "in_reply_to": st.just("m1"),
                "results": st.lists(
                    fields_of(set(SaleResult.__dataclass_fields__) | {"balance"}), max_size=3
                ),
            },
        ),
    )
)
def test_acks_with_wrong_values_are_refused_with_a_code(body: dict[str, Any]) -> None:
    assert_refused_with_code(Ack.from_body, body)


@FUZZ
@given(fields_of(set(Status.__dataclass_fields__)))
def test_status_with_wrong_values_is_refused_with_a_code(body: dict[str, Any]) -> None:
    assert_refused_with_code(Status.from_body, body)


changes = st.sampled_from(sorted(_CHANGE_FIELDS)).flatmap(
    lambda kind: fields_of(set(_CHANGE_FIELDS[kind]) - {"kind"}).map(lambda d, kind=kind: {**d, "kind": kind})
)


@FUZZ
@given(
    st.fixed_dictionaries({"version": json_values, "changes": st.lists(changes | json_values, max_size=3)})
)
def test_deltas_and_snapshots_with_wrong_values_are_refused_with_a_code(body: dict[str, Any]) -> None:
    assert_refused_with_code(Delta.from_body, body)
    assert_refused_with_code(Snapshot.from_body, body)


def test_a_non_ascii_signature_is_a_bad_signature_not_a_crash() -> None:
    """Found by the fuzzer: hmac.compare_digest raises TypeError on non-ASCII strings, which
    escaped the decoder and stopped the server's ingest thread."""
    raw = json.loads(seal_hmac("status", "T1", {}, SECRET, 1))
    raw["sig"] = "hmac-sha256:é"
    try:
        open_envelope(json.dumps(raw).encode(), secret_for=lambda s: SECRET)
    except ProtocolError as exc:
        assert exc.code == "bad_signature"
    else:
        raise AssertionError("accepted a forged signature")
