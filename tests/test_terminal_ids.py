"""A terminal id names MQTT topics, so it is only letters, digits, - and _ (1 to 32): a "*"
would be a wildcard on some brokers (a terminal named "*" reading every terminal's acks),
"." is rewritten, a space refused, "+" and "#" are MQTT's own. Refused with one code,
``bad_terminal_id``, when provisioned, in a message, and in a topic."""

from __future__ import annotations

import sqlite3

import pytest

from server.infra.db import write_txn
from server.registry.terminals import provision
from shared.errors import DomainError
from shared.protocol import Sale, SaleBatch, seal_hmac, topics
from shared.protocol.codec import ProtocolError, check_terminal_id
from shared.protocol.envelope import open_envelope
from tests.helpers import populated

BAD = ["*", "T.1", "T 1", "T+1", "T#1", "T/1", "", "T" * 33, "终端1", "T\x001", "T*"]
GOOD = ["T0001", "t-1_a", "A" * 32, "0", "-", "_"]
SECRET = b"k" * 32


@pytest.mark.parametrize("bad", BAD)
def test_a_bad_terminal_id_is_refused_by_the_one_rule(bad: str) -> None:
    with pytest.raises(ProtocolError) as err:
        check_terminal_id(bad)
    assert err.value.code == "bad_terminal_id"


@pytest.mark.parametrize("good", GOOD)
def test_letters_digits_dash_and_underscore_up_to_32_are_a_terminal_id(good: str) -> None:
    assert check_terminal_id(good) == good
    assert topics.terminal_of(topics.sales(good)) == good


@pytest.mark.parametrize("bad", BAD)
def test_no_topic_is_made_for_a_bad_id_and_none_is_read_from_one(bad: str) -> None:
    for topic_of in (topics.sales, topics.status, topics.ack):
        with pytest.raises(DomainError) as err:
            topic_of(bad)
        assert err.value.code == "bad_terminal_id"
    assert topics.terminal_of(f"canteen/v1/t/{bad}/up/sales") is None


@pytest.mark.parametrize("bad", ["*", "T.1", "T 1", "T+1", "T#1", "T" * 33, "server"])
def test_provisioning_refuses_a_bad_id_and_records_nothing(conn: sqlite3.Connection, clock, bad: str) -> None:  # noqa: ANN001
    populated(conn, clock.now_ms())
    before = conn.execute("SELECT count(*) FROM terminals").fetchone()[0]
    with pytest.raises(DomainError) as err, write_txn(conn):
        provision(conn, "C01", clock.now_ms(), "00" * 32, terminal_id=bad)
    assert err.value.code == "bad_terminal_id"
    assert conn.execute("SELECT count(*) FROM terminals").fetchone()[0] == before


@pytest.mark.parametrize("bad", ["*", "T.1", "T 1", "T+1", "T#1", "T" * 33])
def test_a_message_from_a_bad_sender_or_for_a_bad_terminal_is_refused_with_the_code(bad: str) -> None:
    body = SaleBatch(sales=(Sale(bad, 1, "0" * 32, "K1", "C01", 1200, 1, meal_period="lunch"),)).to_body()
    for sender in (bad, "T0001"):  # the envelope's sender; then only the sale's terminal
        payload = seal_hmac("sale_batch", sender, body, SECRET, 1)
        with pytest.raises(ProtocolError) as err:
            env = open_envelope(payload, secret_for=lambda _t: SECRET)
            SaleBatch.from_body(env.body, env.sender)
        assert err.value.code == "bad_terminal_id"
