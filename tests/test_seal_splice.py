"""A sale batch sealed from the journal's canonical sale texts, spliced
(shared.protocol.envelope.seal_hmac_body_json), is byte for byte what seal_hmac makes of
the decoded sales — so the server's re-encoding verifies it — for any sales, and for rows
journaled before the journal kept the canonical form."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.protocol import Item, Sale, canonical_json, open_envelope, seal_hmac
from shared.protocol.envelope import sale_batch_body_json, seal_hmac_body_json
from terminal.store import Store

SECRET = bytes(range(32))
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # any but lone surrogates

items = st.builds(
    Item,
    sku=TEXT,
    qty=st.integers(1, 99),
    unit_price_fen=st.integers(0, 10**6),
    reference_price_fen=st.none() | st.integers(0, 10**6),
)
sales = st.builds(
    Sale,
    terminal_id=st.just("T-1"),
    seq=st.integers(1, 2**40),
    uuid=st.text("0123456789abcdef", min_size=32, max_size=32),
    card_id=st.none() | TEXT,
    canteen_id=TEXT,
    amount_fen=st.integers(1, 10**6),
    occurred_at_ms=st.integers(0, 2**45),
    method=st.sampled_from(["card", "qr", "face", "ecny"]),
    kind=st.sampled_from(["meal", "shop"]),
    meal_period=st.none() | TEXT,
    items=st.lists(items, max_size=3).map(tuple),
    offline=st.booleans(),
    visitor=st.booleans(),
    subsidy_fen=st.integers(0, 10**6),
    self_fen=st.integers(0, 10**6),
    credential=st.none() | TEXT,
    pin_approval=st.none() | TEXT,
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(sales, min_size=1, max_size=5),
    st.text("0123456789abcdef", min_size=1, max_size=32),
    st.integers(0, 2**45),
)
def test_a_spliced_batch_is_the_sealed_batch(batch: list[Sale], msg_id: str, at_ms: int) -> None:
    dicts = [s.to_dict() for s in batch]
    texts = [canonical_json(d).decode() for d in dicts]
    spliced = seal_hmac_body_json("sale_batch", "T-1", sale_batch_body_json(texts), SECRET, at_ms, msg_id)
    assert spliced == seal_hmac("sale_batch", "T-1", {"sales": dicts}, SECRET, at_ms, msg_id)
    env = open_envelope(spliced, secret_for=lambda s: SECRET if s == "T-1" else None)
    assert env.body == {"sales": dicts}


def _sale(store: Store, at_ms: int, card: str) -> Sale:
    sale = store.record_sale(
        terminal_id="T-1",
        canteen_id="食堂一",
        card_id=card,
        holder_id="H1",
        amount_fen=1200,
        subsidy_fen=200,
        self_fen=1000,
        occurred_at_ms=at_ms,
        kind="shop",
        items=(Item("米饭", 2, 600),),
        announced=True,
    )
    return sale


def test_the_outbox_gives_canonical_text_for_old_and_new_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db")
    old, new = _sale(store, 1_000, "卡1"), _sale(store, 2_000, "卡2")
    # a row journaled by an older terminal: json.dumps' default form, not marked canonical
    store.conn.execute(
        "UPDATE journal SET sale_json = ?, canonical = 0 WHERE seq = ?",
        (json.dumps(old.to_dict(), ensure_ascii=False), old.seq),
    )
    stored_old = store.conn.execute("SELECT sale_json FROM journal WHERE seq = ?", (old.seq,)).fetchone()[0]
    assert stored_old != canonical_json(old.to_dict()).decode()
    wire = store.outbox_wire_after(0, 10)
    assert wire == [(s.seq, canonical_json(s.to_dict()).decode()) for s in (old, new)]
    assert store.outbox_after(0, 10) == [(s.seq, s.to_dict()) for s in (old, new)]
    store.close()


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters() | st.sampled_from(["\x00", "\x7f", '"', "\\", "\ud800", "\u2028"])))
def test_the_spliced_signature_is_json_dumps_of_it(sig: str) -> None:
    """The signature goes in as json.dumps(sig) wrote it, whatever the signer returns."""
    from shared.protocol.envelope import _signed

    data = canonical_json({"body": {}, "sender": "T-1", "type": "ack"})
    cut = data.rindex(b',"type":')
    assert _signed(data, lambda _: sig) == data[:cut] + b',"sig":' + json.dumps(sig).encode() + data[cut:]
