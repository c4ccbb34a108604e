"""Protocol v1: golden wire bytes, round trips, signatures, and malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import message
from shared.protocol import (
    Ack,
    Delta,
    Item,
    ProtocolError,
    Sale,
    SaleBatch,
    SaleResult,
    ServerKey,
    ServerVerifier,
    Status,
    canonical_json,
    open_envelope,
    seal_hmac,
    seal_server,
    topics,
)
from shared.protocol.face_vector import encoding_to_str, pack_encoding
from shared.protocol.messages import CHANGE_TYPES, Balance, CardChange, HolderChange

GOLDEN = Path(__file__).parent / "fixtures" / "protocol"
SECRET = bytes(range(32))
SERVER_SEED = "11" * 32
T0 = 1_767_672_000_000  # 2026-01-06 12:00 Asia/Shanghai


def golden_sale() -> Sale:
    return Sale(
        terminal_id="T0001",
        seq=42,
        uuid="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        card_id="C00001",
        canteen_id="C01",
        amount_fen=1550,
        occurred_at_ms=T0,
        method="card",
        kind="shop",
        items=(Item("tissue", 1, 350), Item("lunchbox", 1, 1200)),
        offline=True,
        visitor=True,
        subsidy_fen=1000,
        self_fen=550,
    )


def golden_messages() -> dict[str, bytes]:
    key = ServerKey.from_hex(SERVER_SEED)
    return {
        "sale_batch.json": seal_hmac(
            "sale_batch", "T0001", SaleBatch((golden_sale(),)).to_body(), SECRET, T0, "m-001"
        ),
        "ack.json": seal_hmac(
            "ack",
            "server",
            Ack(
                "m-001",
                (
                    SaleResult(
                        "T0001",
                        42,
                        golden_sale().uuid,
                        "applied",
                        None,
                        1000,
                        550,
                        0,
                        "H00001",
                        Balance(29000, 450, 7),
                    ),
                    SaleResult("T0001", 43, "ffff", "rejected", "card_unknown"),
                ),
            ).to_body(),
            SECRET,
            T0 + 5,
            "m-002",
        ),
        "status.json": seal_hmac(
            "status",
            "T0001",
            Status(
                "online",
                pending=3,
                watermark_ms=T0 - 60_000,
                delta_version=7,
                clock_ms=T0,
                clock_offset_ms=-120,
                software="canteen-terminal/1",
            ).to_body(),
            SECRET,
            T0,
            "m-003",
        ),
        "delta.json": seal_server(
            "delta",
            Delta(
                8,
                (
                    {
                        "kind": "holder",
                        "holder_id": "H00001",
                        "unit_id": "U01",
                        "subsidy_fen": 29000,
                        "self_fen": 450,
                        "blocked": False,
                    },
                    {"kind": "card", "card_id": "C00001", "holder_id": "H00001", "status": "lost"},
                ),
            ).to_body(),
            key,
            T0,
            "m-004",
        ),
    }


@pytest.mark.parametrize("name", sorted(golden_messages()))
def test_encoding_matches_golden_fixture(name: str) -> None:
    assert golden_messages()[name] == (GOLDEN / name).read_bytes().rstrip(b"\n")


def test_golden_sale_batch_decodes_to_the_sale() -> None:
    env = open_envelope((GOLDEN / "sale_batch.json").read_bytes(), secret_for=lambda s: SECRET)
    assert SaleBatch.from_body(env.body, env.sender).sales == (golden_sale(),)


def test_golden_delta_verifies_with_the_public_key_only() -> None:
    verifier = ServerVerifier(ServerKey.from_hex(SERVER_SEED).public_hex)
    env = open_envelope((GOLDEN / "delta.json").read_bytes(), server=verifier)
    assert Delta.from_body(env.body).version == 8


def test_golden_ack_and_status_decode() -> None:
    ack = Ack.from_body(open_envelope((GOLDEN / "ack.json").read_bytes(), secret_for=lambda s: SECRET).body)
    assert [r.status for r in ack.results] == ["applied", "rejected"]
    assert ack.results[0].balance == Balance(29000, 450, 7)
    status = Status.from_body(
        open_envelope((GOLDEN / "status.json").read_bytes(), secret_for=lambda s: SECRET).body
    )
    assert status.watermark_ms == T0 - 60_000


@pytest.mark.parametrize(
    ("status", "reason", "rejected"),
    [
        ("applied", None, False),
        ("rejected", "card_unknown", True),
        ("duplicate", None, False),  # the first copy was applied
        ("duplicate", "card_unknown", True),  # the first copy was rejected: its reason repeats
    ],
)
def test_a_result_is_a_rejection_when_the_server_did_not_apply_the_sale(
    status: str, reason: str | None, rejected: bool
) -> None:
    assert SaleResult("T1", 1, "u", status, reason).rejected is rejected


def test_a_changed_byte_breaks_the_signature() -> None:
    data = (GOLDEN / "sale_batch.json").read_bytes().replace(b'"amount_fen":1550', b'"amount_fen":1551')
    with pytest.raises(ProtocolError) as err:
        open_envelope(data, secret_for=lambda s: SECRET)
    assert err.value.code == "bad_signature"


def test_a_wrong_secret_is_a_bad_signature() -> None:
    with pytest.raises(ProtocolError) as err:
        open_envelope((GOLDEN / "sale_batch.json").read_bytes(), secret_for=lambda s: b"x" * 32)
    assert err.value.code == "bad_signature"


def test_unknown_sender_is_refused() -> None:
    with pytest.raises(ProtocolError) as err:
        open_envelope((GOLDEN / "sale_batch.json").read_bytes(), secret_for=lambda s: None)
    assert err.value.code == "unknown_terminal"


def test_a_delta_signed_by_another_key_is_refused() -> None:
    other = ServerVerifier(ServerKey.generate().public_hex)
    with pytest.raises(ProtocolError) as err:
        open_envelope((GOLDEN / "delta.json").read_bytes(), server=other)
    assert err.value.code == "bad_signature"


def test_a_broadcast_opened_before_is_still_checked_in_full_when_changed() -> None:
    """Opening the same delta again (every terminal does) may reuse the first verdict, but
    only for the very same bytes and key: a changed byte or another key is checked afresh."""
    data = (GOLDEN / "delta.json").read_bytes()
    verifier = ServerVerifier(ServerKey.from_hex(SERVER_SEED).public_hex)
    first, again = open_envelope(data, server=verifier), open_envelope(data, server=verifier)
    assert again == first and again.body is not first.body  # each opener its own body
    changed = data.replace(b'"version":', b'"version":1', 1)
    assert changed != data
    with pytest.raises(ProtocolError) as err:
        open_envelope(changed, server=verifier)
    assert err.value.code == "bad_signature"
    with pytest.raises(ProtocolError) as err:
        open_envelope(data, server=ServerVerifier(ServerKey.generate().public_hex))
    assert err.value.code == "bad_signature"
    with pytest.raises(ProtocolError) as err:  # the verdict on the bytes, not the type asked for
        open_envelope(data, server=verifier, expect_type="snapshot")
    assert err.value.code == "bad_field"


def test_a_broadcast_sealed_in_this_process_opens_as_it_would_anywhere() -> None:
    """seal_server remembers what it made as verified: opening it gives what the full
    check gives, and only under the sealing key."""
    from shared.protocol import envelope

    key = ServerKey.from_hex(SERVER_SEED)
    data = seal_server("delta", {"version": 3, "changes": []}, key, T0, "m1")
    verifier = ServerVerifier(key.public_hex)
    remembered = open_envelope(data, server=verifier)
    envelope._opened_broadcasts.clear()
    assert open_envelope(data, server=verifier) == remembered
    with pytest.raises(ProtocolError) as err:
        open_envelope(data, server=ServerVerifier(ServerKey.generate().public_hex))
    assert err.value.code == "bad_signature"


def test_a_lone_surrogate_is_malformed_not_a_crash() -> None:
    """A "\\ud800" escape is valid JSON text but no UTF-8: refused like any malformed
    message (it used to escape as a UnicodeEncodeError, failing the ingest worker's group)."""
    wire = (GOLDEN / "status.json").read_bytes().replace(b'"state":"online"', b'"state":"\\ud800"')
    assert wire != (GOLDEN / "status.json").read_bytes()
    with pytest.raises(ProtocolError) as err:
        open_envelope(wire, secret_for=lambda s: SECRET)
    assert err.value.code == "malformed"
    with pytest.raises(ProtocolError) as err:
        canonical_json({"x": "\ud800"})
    assert err.value.code == "malformed"


def test_an_hmac_envelope_is_not_accepted_where_the_server_key_is_required() -> None:
    verifier = ServerVerifier(ServerKey.from_hex(SERVER_SEED).public_hex)
    with pytest.raises(ProtocolError) as err:
        open_envelope((GOLDEN / "status.json").read_bytes(), server=verifier)
    assert err.value.code == "bad_signature"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"[]", "bad_field"),
        (b'{"amount": 1.5}', "malformed"),
        (b'{"x": NaN}', "malformed"),
        (b"{" * 5000 + b"}" * 5000, "malformed"),
        (b"x" * 2_000_000, "too_large"),
    ],
)
def test_malformed_input_gets_a_stable_code(payload: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        open_envelope(payload, secret_for=lambda s: SECRET)
    assert err.value.code == code


def test_future_schema_version_is_refused() -> None:
    raw = json.loads((GOLDEN / "sale_batch.json").read_bytes())
    raw["schema_version"] = 2
    with pytest.raises(ProtocolError) as err:
        open_envelope(json.dumps(raw).encode(), secret_for=lambda s: SECRET)
    assert err.value.code == "bad_schema_version"


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"amount_fen": 0}, "amount_fen"),
        ({"amount_fen": 12.5}, "amount_fen"),
        ({"amount_fen": "1200"}, "amount_fen"),
        ({"seq": 0}, "seq"),
        ({"method": "cash"}, "method"),
        ({"subsidy_fen": 1}, "subsidy_fen"),
        ({"kind": "meal", "meal_period": None}, "meal_period"),
        ({"items": [{"sku": "tissue", "qty": 1, "unit_price_fen": 1}]}, "amount_fen"),
        ({"withdraw": True}, "unknown field"),
        ({"uuid": "ab\x00cd"}, "NUL"),  # PostgreSQL cannot store one: refused at the door
        ({"credential": "sun:04\x00"}, "NUL"),
    ],
)
def test_bad_sale_fields_are_named(change: dict, detail: str) -> None:
    d = {**golden_sale().to_dict(), **change}
    with pytest.raises(ProtocolError) as err:
        Sale.from_dict(d)
    assert err.value.code == "bad_field"
    assert detail in err.value.detail


def test_a_batch_may_only_carry_the_senders_sales() -> None:
    body = SaleBatch((golden_sale(),)).to_body()
    with pytest.raises(ProtocolError) as err:
        SaleBatch.from_body(body, "T0002")
    assert err.value.code == "terminal_mismatch"


def test_canonical_json_rejects_floats_and_sorts_keys() -> None:
    assert canonical_json({"b": 1, "a": "食堂"}) == '{"a":"食堂","b":1}'.encode()
    with pytest.raises(ProtocolError):
        canonical_json({"amount": 0.1})


def test_topics_round_trip_the_terminal_id() -> None:
    assert topics.terminal_of(topics.sales("T0009")) == "T0009"
    assert topics.terminal_of(topics.DELTA) is None
    with pytest.raises(ProtocolError):
        topics.sales("T/1")


# --- property: any valid sale survives encode → sign → verify → decode unchanged -------------

ids = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-_食堂", min_size=1, max_size=20)
# a terminal id names topics: the rule's alphabet only (tests/test_terminal_ids.py)
terminal_ids = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


@st.composite
def sales(draw: st.DrawFn) -> Sale:
    items = tuple(
        Item(draw(ids), draw(st.integers(1, 5)), draw(st.integers(0, 10_000)))
        for _ in range(draw(st.integers(0, 4)))
    )
    amount = sum(i.qty * i.unit_price_fen for i in items) if items else draw(st.integers(1, 100_000))
    if amount == 0:
        amount, items = draw(st.integers(1, 100_000)), ()
    subsidy = draw(st.integers(0, amount))
    kind = draw(st.sampled_from(["meal", "shop"]))
    return Sale(
        terminal_id=draw(terminal_ids),
        seq=draw(st.integers(1, 2**40)),
        uuid=draw(ids),
        card_id=draw(ids),
        canteen_id=draw(ids),
        amount_fen=amount,
        occurred_at_ms=draw(st.integers(0, 2**45)),
        method=draw(st.sampled_from(["card", "qr", "face"])),
        kind=kind,
        meal_period=draw(st.sampled_from(["breakfast", "lunch", "dinner"])) if kind == "meal" else None,
        items=items,
        offline=draw(st.booleans()),
        visitor=draw(st.booleans()),
        subsidy_fen=subsidy,
        self_fen=amount - subsidy,
        credential=draw(st.none() | ids),
    )


@given(st.lists(sales(), min_size=1, max_size=5), st.binary(min_size=16, max_size=64))
def test_any_sale_batch_round_trips_through_the_wire(batch: list[Sale], secret: bytes) -> None:
    sender = batch[0].terminal_id
    batch = [Sale(**{**s.__dict__, "terminal_id": sender}) for s in batch]
    wire = seal_hmac("sale_batch", sender, SaleBatch(tuple(batch)).to_body(), secret, 1)
    env = open_envelope(wire, secret_for=lambda s: secret)
    assert SaleBatch.from_body(env.body, env.sender).sales == tuple(batch)
    assert canonical_json(json.loads(wire)) == wire  # canonical: re-encoding is identical


# --- downstream changes: typed records, the same wire ----------------------------------------


def test_the_golden_delta_decodes_to_typed_changes_that_encode_to_the_same_bytes() -> None:
    key = ServerKey.from_hex(SERVER_SEED)
    env = open_envelope((GOLDEN / "delta.json").read_bytes(), server=ServerVerifier(key.public_hex))
    delta = Delta.from_body(env.body)
    assert delta.changes == (
        HolderChange("H00001", "U01", 29000, 450, False),
        CardChange("C00001", "H00001", "lost"),
    )
    wire = seal_server("delta", delta.to_body(), key, env.sent_at_ms, env.msg_id)
    assert wire == (GOLDEN / "delta.json").read_bytes().rstrip(b"\n")


def test_an_unknown_change_kind_is_refused_with_its_own_code() -> None:
    with pytest.raises(ProtocolError) as err:
        Delta.from_body({"version": 9, "changes": [{"kind": "voucher", "holder_id": "H1"}]})
    assert err.value.code == "unknown_change_kind" and "voucher" in err.value.detail
    assert (
        message("unknown_change_kind", "zh") != message("unknown_change_kind", "en") != "unknown_change_kind"
    )
    with pytest.raises(ProtocolError) as err:
        Delta.from_body({"version": 9, "changes": [{"holder_id": "H1"}]})
    assert err.value.code == "bad_field"  # no kind at all: a malformed change, not a new kind


ascii_ids = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-_食堂", min_size=1, max_size=64)
fen = st.integers(-(2**53), 2**53)
configs = st.dictionaries(
    st.text(max_size=8), st.integers() | st.text(max_size=8) | st.booleans(), max_size=3
)
meals = st.builds(
    lambda day, taken: {"day": day, "taken": taken},
    st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
    st.dictionaries(
        ascii_ids,
        st.dictionaries(st.sampled_from(["breakfast", "lunch", "dinner"]), st.integers(0, 10_000)),
        max_size=3,
    ),
)
wire_changes = st.one_of(
    st.builds(
        lambda h, u, s, o, b, m: {
            "kind": "holder",
            "holder_id": h,
            "unit_id": u,
            "subsidy_fen": s,
            "self_fen": o,
            "blocked": b,
            **({} if m is None else {"meals": m}),
        },
        ascii_ids,
        ascii_ids,
        fen,
        fen,
        st.booleans(),
        st.none() | meals,
    ),
    st.builds(
        lambda c, h, s: {"kind": "card", "card_id": c, "holder_id": h, "status": s},
        ascii_ids,
        ascii_ids,
        st.sampled_from(["active", "lost", "retired"]),
    ),
    st.builds(lambda c, cfg: {"kind": "canteen", "canteen_id": c, "config": cfg}, ascii_ids, configs),
    st.builds(lambda cfg: {"kind": "settings", "config": cfg}, configs),
    st.builds(
        lambda f, h, v: {
            "kind": "face",
            "face_id": f,
            "holder_id": h,
            "encoding": v if v is None else encoding_to_str(pack_encoding(v)),
        },
        ascii_ids,
        ascii_ids,
        st.none() | st.lists(st.floats(-1, 1, width=32), min_size=128, max_size=128),
    ),
    st.builds(
        lambda h, k, e, a: {
            "kind": "qr_key",
            "holder_id": h,
            "public_key": k,
            "expires_at_ms": e,
            "offline_allowance_fen": a,
        },
        ascii_ids,
        st.binary(min_size=32, max_size=32).map(bytes.hex),
        st.integers(0, 2**53),
        st.integers(0, 10_000_000),
    ),
)


@given(st.lists(wire_changes, max_size=6))
def test_any_valid_change_decodes_to_its_record_and_back_to_the_same_wire(changes: list[dict]) -> None:
    body = json.loads(canonical_json({"version": 3, "changes": changes}))
    delta = Delta.from_body(body)
    assert [type(c).kind for c in delta.changes] == [c["kind"] for c in changes]
    assert all(type(c) in CHANGE_TYPES for c in delta.changes)
    assert delta.to_body() == body
