"""Reversals on the wire (issue 13): golden bytes, round trips, signatures, bad fields."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.protocol import (
    ProtocolError,
    Reversal,
    ReversalAck,
    ReversalBatch,
    ReversalResult,
    open_envelope,
    seal_hmac,
    topics,
)
from shared.protocol.messages import Balance

GOLDEN = Path(__file__).parent / "fixtures" / "protocol"
SECRET = bytes(range(32))
T0 = 1_767_672_000_000  # 2026-01-06 12:00 Asia/Shanghai


def golden_reversal() -> Reversal:
    return Reversal(
        terminal_id="T0001",
        seq=3,
        uuid="019b8f2a0c007a3e8d1f2b3c4d5e6f70",
        sale_seq=42,
        sale_uuid="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        canteen_id="C01",
        operator_card="OP0001",
        amount_fen=1550,
        occurred_at_ms=T0 + 120_000,
        method="card",
        offline=True,
    )


def golden_messages() -> dict[str, bytes]:
    return {
        "reversal_batch.json": seal_hmac(
            "reversal_batch",
            "T0001",
            ReversalBatch((golden_reversal(),)).to_body(),
            SECRET,
            T0 + 120_000,
            "m-101",
        ),
        "reversal_ack.json": seal_hmac(
            "reversal_ack",
            "server",
            ReversalAck(
                "m-101",
                (
                    ReversalResult(
                        "T0001",
                        3,
                        golden_reversal().uuid,
                        "applied",
                        None,
                        1000,
                        550,
                        "H00001",
                        Balance(30000, 1000, 9),
                    ),
                    ReversalResult("T0001", 4, "aaaa", "pending"),
                    ReversalResult("T0001", 5, "bbbb", "rejected", "reversal_outside_window"),
                ),
            ).to_body(),
            SECRET,
            T0 + 121_000,
            "m-102",
        ),
    }


@pytest.mark.parametrize("name", sorted(golden_messages()))
def test_encoding_matches_golden_fixture(name: str) -> None:
    assert golden_messages()[name] == (GOLDEN / name).read_bytes().rstrip(b"\n")


def test_the_golden_batch_decodes_to_the_reversal_signed_by_its_terminal() -> None:
    env = open_envelope((GOLDEN / "reversal_batch.json").read_bytes(), secret_for=lambda s: SECRET)
    assert env.type == "reversal_batch" and env.sender == "T0001"
    [r] = ReversalBatch.from_body(env.body, env.sender).reversals
    assert r == golden_reversal()
    assert (r.reversal_id, r.sale_id) == ("T0001/R3", "T0001/42")


def test_the_golden_ack_says_applied_pending_and_rejected() -> None:
    env = open_envelope((GOLDEN / "reversal_ack.json").read_bytes(), secret_for=lambda s: SECRET)
    ack = ReversalAck.from_body(env.body)
    assert [(r.status, r.pending, r.rejected) for r in ack.results] == [
        ("applied", False, False),
        ("pending", True, False),
        ("rejected", False, True),
    ]
    assert ack.results[0].balance == Balance(30000, 1000, 9)


def test_a_changed_amount_breaks_the_terminals_signature() -> None:
    data = (GOLDEN / "reversal_batch.json").read_bytes().replace(b'"amount_fen":1550', b'"amount_fen":1551')
    with pytest.raises(ProtocolError) as err:
        open_envelope(data, secret_for=lambda s: SECRET)
    assert err.value.code == "bad_signature"


def test_reversals_have_their_own_topic() -> None:
    assert topics.reversals("T0001") == "canteen/v1/t/T0001/up/reversals"
    assert topics.terminal_of(topics.reversals("T0001")) == "T0001"


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"amount_fen": 0}, "amount_fen"),
        ({"amount_fen": 15.5}, "amount_fen"),
        ({"sale_seq": 0}, "sale_seq"),
        ({"uuid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}, "own id"),  # the sale's uuid
        ({"method": "cash"}, "method"),
        ({"method": "ecny"}, "refund_no"),  # a digital RMB reversal names its gateway refund
        ({"refund_no": "X-1"}, "refund_no"),  # and only that one
        ({"operator_card": ""}, "operator_card"),
        ({"sale_terminal_id": "T0002"}, "unknown field"),  # a sale of another terminal cannot be named
    ],
)
def test_bad_reversal_fields_are_named(change: dict, detail: str) -> None:
    d = {**golden_reversal().to_dict(), **change}
    with pytest.raises(ProtocolError) as err:
        Reversal.from_dict(d)
    assert err.value.code == "bad_field"
    assert detail in err.value.detail


def test_a_batch_may_only_carry_the_senders_reversals() -> None:
    body = ReversalBatch((golden_reversal(),)).to_body()
    with pytest.raises(ProtocolError) as err:
        ReversalBatch.from_body(body, "T0002")
    assert err.value.code == "terminal_mismatch"
    with pytest.raises(ProtocolError) as err:
        ReversalBatch.from_body({"reversals": []}, "T0001")
    assert err.value.code == "bad_field"


@given(
    seq=st.integers(1, 2**40),
    sale_seq=st.integers(1, 2**40),
    amount=st.integers(1, 10_000_000),
    at=st.integers(0, 2**50),
    offline=st.booleans(),
    method=st.sampled_from(["card", "qr", "face", "ecny"]),
    card=st.text(
        st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=64
    ),
    # NUL is refused; a lone surrogate is no UTF-8 (refused as malformed: test_protocol)
)
def test_any_reversal_survives_the_wire_unchanged(
    seq: int, sale_seq: int, amount: int, at: int, offline: bool, method: str, card: str
) -> None:
    r = Reversal(
        "T0001",
        seq,
        "r" * 32,
        sale_seq,
        "s" * 32,
        "C01",
        card,
        amount,
        at,
        method,
        offline,
        "ORDER-1-rev" if method == "ecny" else None,
    )
    wire = seal_hmac("reversal_batch", "T0001", ReversalBatch((r,)).to_body(), SECRET, at)
    env = open_envelope(wire, secret_for=lambda s: SECRET)
    assert ReversalBatch.from_body(env.body, "T0001").reversals == (r,)
