"""Opening the ingest worker's messages before its write transaction: each message's
signature verified with its terminal's current key, else its next or previous one
(:mod:`server.registry.rotation`), its sender checked against its topic, and its body
decoded as the type that topic takes. CPU work with the in-memory key book
(:class:`server.registry.terminals.SecretBook`), done without holding the database's write
lock; a message refused here is refused as it is, in the transaction, in its place
(:mod:`server.sales.ingest`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from server.infra.terminal_keys import CURRENT
from server.registry.terminals import SecretBook
from shared.protocol import (
    Envelope,
    ProtocolError,
    ReversalBatch,
    SaleBatch,
    Status,
    UpdateReport,
    open_envelope,
    topics,
)
from shared.protocol.codec import parse_json


class Opened(NamedTuple):
    """One message opened, verified and decoded before the write transaction: CPU work with
    the in-memory key book, done without holding the database's write lock. What reads or
    writes the database (a rotation completed, revocations, statuses) is done in the
    transaction, in the order the messages came (:meth:`server.sales.ingest.IngestWorker._apply`)."""

    topic: str
    claimed: str | None  # the terminal the topic names
    payload: bytes
    env: Envelope | None  # None: refused before its sender was established (``refused``)
    which: str  # the key that verified it (CURRENT, NEXT, …)
    kind: str | None  # the body's type when the topic accepts it, else None
    decoded: object  # the decoded body, or the ProtocolError decoding raised
    refused: ProtocolError | None = None

    def body(self) -> Any:
        """The decoded body; raises the decoding's refusal."""
        if isinstance(self.decoded, ProtocolError):
            raise self.decoded
        return self.decoded


# the message types ingest takes and the topic each must come on (any other: ``bad_field``)
_TOPIC_OF_KIND: dict[str, Callable[[str], str]] = {
    "sale_batch": topics.sales,
    "reversal_batch": topics.reversals,
    "status": topics.status,
    "update_report": topics.update_report,
}


def open_decoded(book: SecretBook, topic: str, payload: bytes, now: int) -> Opened:
    """Open, verify and decode one message with the terminals' keys in ``book`` (no
    database work, but a key book miss)."""
    claimed = topics.terminal_of(topic)
    try:
        env, which = _open(book, payload, now)
        if claimed is None or env.sender != claimed:
            raise ProtocolError("terminal_mismatch", f"{env.sender} on {topic}")
    except ProtocolError as exc:
        return Opened(topic, claimed, payload, None, "", None, None, exc)
    route = _TOPIC_OF_KIND.get(env.type)
    kind = env.type if route is not None and topic == route(claimed) else None
    decoded: object = None
    try:
        if kind == "sale_batch":
            decoded = SaleBatch.from_body(env.body, env.sender)
        elif kind == "reversal_batch":
            decoded = ReversalBatch.from_body(env.body, env.sender)
        elif kind == "status":
            decoded = Status.from_body(env.body)
        elif kind == "update_report":
            decoded = UpdateReport.from_body(env.body)
    except ProtocolError as exc:
        decoded = exc
    return Opened(topic, claimed, payload, env, which, kind, decoded)


def _open(book: SecretBook, payload: bytes, now: int) -> tuple[Envelope, str]:
    """Open a message with the sender's current key, else its next or previous one;
    returns the envelope and which key verified it."""
    keys: list[tuple[str, bytes]] = []

    def current(sender: str) -> bytes | None:
        keys.extend(book.keys(sender, now))
        return keys[0][1] if keys else None

    try:
        return open_envelope(payload, secret_for=current), CURRENT
    except ProtocolError as exc:
        if exc.code != "bad_signature" or len(keys) < 2:
            raise
        first = exc
    for which, secret in keys[1:]:
        try:
            return open_envelope(payload, secret_for=lambda _s, k=secret: k), which
        except ProtocolError as exc:
            if exc.code != "bad_signature":
                raise
    raise first


def msg_id_of(payload: bytes) -> str:
    """Best-effort msg_id of a refused message, for the refusal's ``in_reply_to``."""
    try:
        raw = parse_json(payload)
    except ProtocolError:
        return "-"
    msg_id = raw.get("msg_id") if isinstance(raw, dict) else None
    return msg_id if isinstance(msg_id, str) and 0 < len(msg_id) <= 64 else "-"
