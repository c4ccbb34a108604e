"""Fuzzing the ingest path: the real :class:`IngestWorker` thread on a real database gets
malformed, oversized, wrongly signed, replayed and out-of-range messages. Every one is
refused with a defined reason code (a ``rejections`` row and a refusal ack, or a sale
result ``rejected`` with its reason) or, for a replay, answered ``duplicate`` with the
first result; the ledger does not move; and the worker is still running and still applies
a good sale afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.books import ledger
from server.infra.db import open_db
from server.sales.ingest import IngestWorker
from shared.clock import FakeClock, ms_from_china
from shared.errors import CATALOG
from shared.protocol import Ack, ProtocolError, SaleBatch, Status, open_envelope, seal_hmac, topics
from shared.protocol.messages import MAX_SALE_FEN
from tests.helpers import populated, reopen, sale, signed_batch, terminal

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(repr=False)
class Ingest:
    """A worker on its own database; ``send`` waits until it has handled the message."""

    worker: IngestWorker
    conn: Any
    creds: Any
    other: Any  # a second terminal, of another canteen
    cards: list[str]
    clock: FakeClock
    acks: list[tuple[str, bytes]]
    lock: threading.Lock
    seqs: Iterator[int]

    def __repr__(self) -> str:
        return f"Ingest(terminal={self.creds.terminal_id})"

    def send(self, topic: str, payload: bytes) -> list[Ack]:
        with self.lock:
            before = len(self.acks)
        self.worker.submit(topic, payload)
        assert self.worker.idle.wait(30), "the worker did not finish the message"
        assert self.worker.alive, "the ingest worker died"
        with self.lock:
            new = self.acks[before:]
        secret = bytes.fromhex(self.creds.secret_hex)
        return [
            Ack.from_body(open_envelope(p, secret_for=lambda s: secret if s == "server" else None).body)
            for t, p in new
            if t == topics.ack(self.creds.terminal_id)
        ]

    def snapshot(self) -> tuple[int, ...]:
        """What a refused message must not change: the ledger and the applied sales (a
        refused sale's decision is stored, so that a resend gets the same answer)."""
        q = lambda sql: int(self.conn.execute(sql).fetchone()[0])  # noqa: E731
        return (
            q("SELECT count(*) FROM txns"),
            q("SELECT count(*) FROM entries"),
            q("SELECT count(*) FROM sales WHERE status = 'applied'"),
            q("SELECT coalesce(sum(abs(balance_fen)), 0) FROM accounts"),
            ledger.ledger_sum(self.conn),
            q("SELECT coalesce(max(version), 0) FROM deltas"),
        )

    def rejections(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM rejections").fetchone()[0])

    def good_sale(self, **kw: Any) -> Any:
        fields: dict[str, Any] = {"kind": "shop", "meal_period": None}
        fields.update(kw)
        card, amount = fields.pop("card_id", self.cards[0]), fields.pop("amount_fen", 300)
        return sale(self.creds, next(self.seqs), card, amount, self.clock.now_ms(), **fields)


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    clock = FakeClock(ms_from_china("2026-01-06T12:00"))
    app = create_app({"HOME": str(tmp_path_factory.mktemp("fuzz-ingest")), "TESTING": True}, clock=clock)
    conn = open_db(app.config["DATABASE"])
    world = populated(conn, clock.now_ms(), diners=6)
    creds = terminal(conn, "C01", clock.now_ms())
    other = terminal(conn, "C02", clock.now_ms())
    acks: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def publish(topic: str, payload: bytes, retain: bool) -> bool:
        with lock:
            acks.append((topic, payload))
        return True

    worker = IngestWorker(open_db(app.config["DATABASE"]), clock, publish).start()
    h = Ingest(
        worker, conn, creds, other, [d.card_id for d in world.diners], clock, acks, lock, itertools.count(1)
    )
    yield h
    worker.stop()
    conn.close()


def assert_refused(h: Ingest, topic: str, payload: bytes, *, known: bool = True) -> str:
    """The message changes nothing and is refused with a defined code; returns the code."""
    before, refusals = h.snapshot(), h.rejections()
    acks = h.send(topic, payload)
    assert h.snapshot() == before, "a refused message changed the ledger or the sales"
    if h.rejections() > refusals:  # refused as a whole
        code = h.conn.execute("SELECT reason FROM rejections ORDER BY id DESC LIMIT 1").fetchone()[0]
        if known:
            assert [a.reason for a in acks] == [code], "the terminal was not told why"
    else:  # decoded, but every sale in it refused
        assert acks and acks[0].results and all(r.status == "rejected" for r in acks[0].results), acks
        code = acks[0].results[0].reason
    assert code in CATALOG, f"reason {code!r} is not a defined code"
    return code


def mutate(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return out


DELETE = object()
S = ("sales", 0)
# (where, a value that must be refused there)
BAD_SALE_FIELDS: list[tuple[tuple[Any, ...], Any]] = [
    *((S + ("amount_fen",), v) for v in (0, -1, MAX_SALE_FEN + 1, "300", True, None, 2**64)),
    *((S + ("seq",), v) for v in (0, -1, 2**53 + 1, "1", None)),
    *((S + ("terminal_id",), v) for v in ("", "x" * 65, None)),
    *((S + ("uuid",), v) for v in ("", "u" * 65, 5)),
    (S + ("canteen_id",), "C02"),
    (S + ("canteen_id",), "C99"),
    (S + ("canteen_id",), ""),
    (S + ("card_id",), "NO-SUCH-CARD"),
    (S + ("card_id",), None),
    (S + ("card_id",), ["K1"]),
    (S + ("occurred_at_ms",), -1),
    (S + ("occurred_at_ms",), 2**53 + 1),
    (S + ("method",), "cash"),
    (S + ("method",), ["card"]),
    (S + ("kind",), "refund"),
    (S + ("kind",), {}),
    (S + ("meal_period",), "supper"),
    (S + ("subsidy_fen",), 301),
    (S + ("subsidy_fen",), -1),
    (S + ("self_fen",), 1),
    (S + ("items",), [{"sku": "tissue", "qty": 1, "unit_price_fen": 1}]),
    (S + ("items",), [{"sku": "tissue", "qty": 0, "unit_price_fen": 300}]),
    (S + ("items",), "tissue"),
    (S + ("offline",), "yes"),
    (S + ("visitor",), 1),
    (S + ("credential",), "c" * 257),
    (S + ("evil",), 1),
    *(
        (S + (k,), DELETE)
        for k in ("terminal_id", "seq", "uuid", "canteen_id", "amount_fen", "occurred_at_ms", "offline")
    ),
    (("sales",), []),
    (("sales",), {}),
    (("sales",), None),
    (("extra",), 1),
]
BAD_ENVELOPE_FIELDS: list[tuple[str, Any]] = [
    ("schema_version", 2),
    ("schema_version", True),
    ("schema_version", "1"),
    ("type", "ack"),
    ("type", "delta"),
    ("type", "status"),
    ("type", "nonsense"),
    ("type", ["sale_batch"]),
    ("msg_id", ""),
    ("msg_id", "m" * 65),
    ("msg_id", 7),
    ("sent_at_ms", -1),
    ("sent_at_ms", "now"),
    ("body", []),
    ("body", None),
    ("sender", ""),
    ("sig", DELETE),
    ("sig", ""),
    ("sig", "hmac-sha256:é"),
    ("sig", "ed25519:00"),
    ("nonce", 1),
]


@FUZZ
@given(st.binary(max_size=4000), st.sampled_from(["sales", "status"]))
def test_random_bytes_are_refused_and_change_nothing(ingest: Ingest, data: bytes, where: str) -> None:
    topic = (
        topics.sales(ingest.creds.terminal_id)
        if where == "sales"
        else topics.status(ingest.creds.terminal_id)
    )
    assert_refused(ingest, topic, data)


@FUZZ
@given(st.sampled_from(BAD_SALE_FIELDS), st.booleans())
def test_a_sale_with_a_bad_field_is_refused_signed_or_not(
    ingest: Ingest, bad: tuple[Any, Any], resign: bool
) -> None:
    path, value = bad
    body = mutate(SaleBatch((ingest.good_sale(),)).to_body(), path, value)
    secret = bytes.fromhex(ingest.creds.secret_hex)
    if resign:  # correctly signed by the terminal, and still wrong
        payload = seal_hmac("sale_batch", ingest.creds.terminal_id, body, secret, ingest.clock.now_ms())
    else:  # changed on the way: the signature no longer fits
        raw = json.loads(signed_batch(ingest.creds, [ingest.good_sale()], ingest.clock.now_ms()))
        raw["body"] = body
        payload = json.dumps(raw).encode()
    code = assert_refused(ingest, topics.sales(ingest.creds.terminal_id), payload)
    if not resign:
        assert code in ("bad_signature", "malformed", "bad_field", "too_large")


@FUZZ
@given(st.sampled_from(BAD_ENVELOPE_FIELDS), st.booleans())
def test_an_envelope_with_a_bad_field_is_refused(
    ingest: Ingest, bad: tuple[str, Any], float_in_body: bool
) -> None:
    key, value = bad
    raw = json.loads(signed_batch(ingest.creds, [ingest.good_sale()], ingest.clock.now_ms()))
    if value is DELETE:
        raw.pop(key)
    else:
        raw[key] = value
    text = json.dumps(raw)
    if float_in_body:
        text = text.replace('"amount_fen": 300', '"amount_fen": 300.0')
    assert_refused(ingest, topics.sales(ingest.creds.terminal_id), text.encode())


@FUZZ
@given(st.binary(max_size=64))
def test_a_batch_signed_with_any_other_key_is_refused(ingest: Ingest, key: bytes) -> None:
    if key == bytes.fromhex(ingest.creds.secret_hex):
        return
    payload = seal_hmac(
        "sale_batch", ingest.creds.terminal_id, SaleBatch((ingest.good_sale(),)).to_body(), key, 1
    )
    assert assert_refused(ingest, topics.sales(ingest.creds.terminal_id), payload) == "bad_signature"


def test_strangers_and_impostors_are_refused(ingest: Ingest) -> None:
    batch = SaleBatch((ingest.good_sale(),)).to_body()
    secret = bytes.fromhex(ingest.creds.secret_hex)
    # a terminal nobody provisioned
    stranger = seal_hmac("sale_batch", "T-nobody", batch, secret, 1)
    assert assert_refused(ingest, topics.sales("T-nobody"), stranger, known=False) == "unknown_terminal"
    # our terminal's message on another terminal's topic
    mine = signed_batch(ingest.creds, [ingest.good_sale()], 1)
    assert (
        assert_refused(ingest, topics.sales(ingest.other.terminal_id), mine, known=False)
        == "terminal_mismatch"
    )
    # another terminal's sales inside our terminal's signed envelope
    theirs = mutate(batch, S + ("terminal_id",), ingest.other.terminal_id)
    wrapped = seal_hmac("sale_batch", ingest.creds.terminal_id, theirs, secret, 1)
    assert assert_refused(ingest, topics.sales(ingest.creds.terminal_id), wrapped) == "terminal_mismatch"


def test_oversized_messages_are_refused(ingest: Ingest) -> None:
    topic = topics.sales(ingest.creds.terminal_id)
    huge = b'{"pad": "' + b"x" * 1_048_576 + b'"}'
    assert assert_refused(ingest, topic, huge) == "too_large"
    many = SaleBatch(tuple(ingest.good_sale() for _ in range(1001))).to_body()
    payload = seal_hmac(
        "sale_batch", ingest.creds.terminal_id, many, bytes.fromhex(ingest.creds.secret_hex), 1
    )
    assert assert_refused(ingest, topic, payload) == "too_large"
    deep = ("[" * 5000 + "]" * 5000).encode()
    assert assert_refused(ingest, topic, deep) == "malformed"


@FUZZ
@given(
    st.lists(st.integers(min_value=1, max_value=2_000), min_size=1, max_size=4),
    st.lists(st.booleans(), min_size=1, max_size=4),
)
def test_replayed_sales_are_answered_with_the_first_result_and_applied_once(
    ingest: Ingest, amounts: list[int], fresh_envelopes: list[bool]
) -> None:
    topic = topics.sales(ingest.creds.terminal_id)
    sales = [
        ingest.good_sale(amount_fen=a, card_id=ingest.cards[i % len(ingest.cards)])
        for i, a in enumerate(amounts)
    ]
    wire = signed_batch(ingest.creds, sales, ingest.clock.now_ms())
    first = ingest.send(topic, wire)
    assert [r.status for r in first[0].results] == ["applied"] * len(sales)
    after_first = ingest.snapshot()
    for fresh in fresh_envelopes:
        # the same bytes again (a broker's redelivery), or the same sales in a new envelope (a resend)
        again = signed_batch(ingest.creds, sales, ingest.clock.now_ms() + 1) if fresh else wire
        acks = ingest.send(topic, again)
        assert ingest.snapshot() == after_first, "a replay moved money"
        assert [r.status for r in acks[0].results] == ["duplicate"] * len(sales)
        assert [(r.uuid, r.subsidy_fen, r.self_fen) for r in acks[0].results] == [
            (r.uuid, r.subsidy_fen, r.self_fen) for r in first[0].results
        ]
    # a reused sale number with a new uuid is a conflict, not a second sale
    reused = ingest.good_sale()
    clash = sale(
        ingest.creds, sales[0].seq, ingest.cards[0], 300, ingest.clock.now_ms(), kind="shop", meal_period=None
    )
    assert clash.uuid != reused.uuid
    assert assert_refused(ingest, topic, signed_batch(ingest.creds, [clash], 1)) == "sale_id_conflict"


def test_after_all_that_the_worker_still_applies_a_good_sale(ingest: Ingest) -> None:
    before = ledger.ledger_sum(ingest.conn)
    acks = ingest.send(
        topics.sales(ingest.creds.terminal_id), signed_batch(ingest.creds, [ingest.good_sale()], 1)
    )
    assert acks[0].results[0].status == "applied"
    assert ingest.worker.alive and ledger.ledger_sum(ingest.conn) == before == 0
    assert uuid.UUID(acks[0].results[0].uuid)


class BrittleWorker(IngestWorker):
    """A worker with a bug: a message containing ``POISON`` raises an unexpected error."""

    def _apply(self, opened, now, replies, rejections, shared=False):  # noqa: ANN001, ANN202
        if any(b"POISON" in o.payload for o in opened):
            raise RuntimeError("a bug in handling one message")
        return super()._apply(opened, now, replies, rejections, shared)


def test_an_unexpected_error_drops_only_the_message_that_caused_it(ingest: Ingest) -> None:
    published: list[tuple[str, bytes]] = []
    worker = BrittleWorker(
        reopen(ingest.conn),
        ingest.clock,
        lambda t, p, r: published.append((t, p)) or True,
    )
    good = signed_batch(ingest.creds, [ingest.good_sale()], 1)
    # one transaction would hold both: the poison and a good sale queued behind it
    worker.submit(topics.sales(ingest.creds.terminal_id), b'{"POISON": 1}')
    worker.submit(topics.sales(ingest.creds.terminal_id), good)
    before = ingest.snapshot()
    worker.start()
    try:
        assert worker.idle.wait(30) and worker.alive
        assert worker.stats.dropped_messages == 1
        assert worker.stats.messages == 2  # each once, though the group was retried one by one
        assert ingest.snapshot() != before, "the good sale queued with the poison was not applied"
        assert len(published) == 1  # the good sale's ack; the poison got none
    finally:
        worker.stop()


BAD_STATUS_FIELDS: list[tuple[str, Any]] = [
    ("state", "maybe"),
    ("state", None),
    ("pending", -1),
    ("pending", "3"),
    ("watermark_ms", -5),
    ("watermark_ms", 2**53 + 1),
    ("delta_version", None),
    ("clock_ms", 1.5),
    ("clock_offset_ms", "0"),
    ("software", "s" * 65),
    ("software", None),
    ("mood", "happy"),
]


def _status_row(h: Ingest) -> tuple[Any, ...]:
    return tuple(
        h.conn.execute(
            "SELECT last_status_json, last_status_ms, watermark_ms, state FROM terminals WHERE id = ?",
            (h.creds.terminal_id,),
        ).fetchone()
    )


@FUZZ
@given(st.sampled_from(BAD_STATUS_FIELDS))
def test_a_status_with_a_bad_field_is_refused_and_records_nothing(
    ingest: Ingest, bad: tuple[str, Any]
) -> None:
    key, value = bad
    body = {
        "state": "online",
        "pending": 0,
        "watermark_ms": 1,
        "delta_version": 0,
        "clock_ms": 1,
        "clock_offset_ms": None,
        "offline_since_ms": None,
        "software": "t",
    }
    body[key] = value
    text = json.dumps(body)
    secret = bytes.fromhex(ingest.creds.secret_hex)
    try:
        payload = seal_hmac(
            "status", ingest.creds.terminal_id, json.loads(text), secret, ingest.clock.now_ms()
        )
    except ProtocolError:  # a float cannot even be signed canonically: send it unsigned
        payload = json.dumps(
            {
                "schema_version": 1,
                "type": "status",
                "sender": ingest.creds.terminal_id,
                "msg_id": "m",
                "sent_at_ms": 1,
                "body": body,
                "sig": "hmac-sha256:00",
            }
        ).encode()
    before = _status_row(ingest)
    assert_refused(ingest, topics.status(ingest.creds.terminal_id), payload)
    assert _status_row(ingest) == before


def test_a_replayed_old_status_does_not_lower_the_watermark(ingest: Ingest) -> None:
    secret = bytes.fromhex(ingest.creds.secret_hex)
    topic = topics.status(ingest.creds.terminal_id)

    def status(sent_at_ms: int, watermark_ms: int) -> bytes:
        body = Status(state="online", watermark_ms=watermark_ms, clock_ms=sent_at_ms).to_body()
        return seal_hmac("status", ingest.creds.terminal_id, body, secret, sent_at_ms)

    old = status(1_000, 1_000)
    ingest.send(topic, old)
    ingest.send(topic, status(2_000, 2_000))
    ingest.send(topic, old)  # captured and played back later
    assert _status_row(ingest)[1:3] == (2_000, 2_000)
