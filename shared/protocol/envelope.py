"""The signed envelope around every message, and opening one safely.

``seal_*`` builds wire bytes; :func:`open_envelope` parses, checks the shape and the
signature, and returns an :class:`Envelope` whose ``body`` the message classes decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

from shared.ids import uuid4_hex
from shared.protocol.codec import (
    INT_MAX,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    TERMINAL_ID,
    ProtocolError,
    canonical_json,
    canonical_json_of_parsed,
    frozen_record,
    is_text,
    obj,
    only_keys,
    parse_json,
    req_int,
    req_str,
    req_terminal_id,
)
from shared.protocol.memo import FifoMemo
from shared.protocol.signing import (
    ED25519_PREFIX,
    HMAC_PREFIX,
    ServerKey,
    ServerVerifier,
    hmac_sign,
    hmac_verify,
)

MESSAGE_TYPES = frozenset(
    {
        "sale_batch",
        "ack",
        "status",
        "delta",
        "snapshot",
        "server_status",
        # signed updates (shared.protocol.updates)
        "update_offer",
        "update_report",
        # backup marks (shared.protocol.backup_mark)
        "backup_mark",
        # reversals (冲正; shared.protocol.reversals)
        "reversal_batch",
        "reversal_ack",
        # key rotation (shared.protocol.rekey)
        "rekey",
    }
)
SERVER_SENDER = "server"
# Server broadcasts known to verify, as (server public key, wire bytes): every terminal opens
# each delta the server publishes (all of them, in one process, in the simulator). Whether
# given bytes are a well-formed envelope carrying a valid signature of a given key is a pure
# function of the two, so a hit skips re-encoding and verifying without changing a verdict
# (a changed bit is a different key: checked in full). Kept: what opened, and what
# seal_server made (Ed25519 signatures always verify, and sealed bytes are canonical:
# tests/test_codec_fast_path.py) — never a failure, so forged traffic evicts nothing; the
# first-in entry goes first; snapshots (large) are not kept.
_OPENED_MAX = 256
OPENED_MAX_BYTES = 65_536
_opened_broadcasts: FifoMemo[None] = FifoMemo(_OPENED_MAX)


def _remember_broadcast(public_key: bytes, data: bytes) -> None:
    if len(data) <= OPENED_MAX_BYTES:
        _opened_broadcasts.put((public_key, data), None)


_KEYS = frozenset({"schema_version", "type", "sender", "msg_id", "sent_at_ms", "body", "sig"})


@dataclass(frozen=True)
class Envelope:
    type: str
    sender: str
    msg_id: str
    sent_at_ms: int
    body: dict[str, Any]
    schema_version: int = SCHEMA_VERSION

    def unsigned(self) -> dict[str, Any]:
        return _unsigned(self.type, self.sender, self.msg_id, self.sent_at_ms, self.body, self.schema_version)


def _unsigned(
    type_: str, sender: str, msg_id: str, sent_at_ms: int, body: dict[str, Any], version: int = SCHEMA_VERSION
) -> dict[str, Any]:
    """:meth:`Envelope.unsigned` of the envelope of these fields: the seals build this dict
    without the frozen record (whose construction cost more than the dict)."""
    return {
        "schema_version": version,
        "type": type_,
        "sender": sender,
        "msg_id": msg_id,
        "sent_at_ms": sent_at_ms,
        "body": body,
    }


def _seal(unsigned: dict[str, Any], sign: Callable[[bytes], str]) -> bytes:
    """Canonical bytes of the signed envelope: those of ``{**unsigned, "sig": sig}``.

    In canonical (sorted-key) form ``"sig"`` falls just before ``"type"``, the envelope's
    last key, whose value is a plain message-type name; so the signature is spliced in
    there instead of encoding the whole envelope a second time (the server signs an ack
    per message on its hot path). ``tests/test_protocol.py``'s golden fixtures pin the bytes.
    """
    return _signed(canonical_json(unsigned), sign)


def _signed(data: bytes, sign: Callable[[bytes], str]) -> bytes:
    """The canonical unsigned envelope ``data`` with its signature spliced in (see :func:`_seal`)."""
    sig = sign(data)
    cut = data.rindex(b',"type":')
    # what json.dumps(sig) returns for a str, without its per-call setup
    quoted = encode_basestring_ascii(sig)
    return b"".join((data[:cut], b',"sig":', quoted.encode(), data[cut:]))


def seal_hmac(
    type_: str,
    sender: str,
    body: dict[str, Any],
    secret: bytes,
    sent_at_ms: int,
    msg_id: str | None = None,
) -> bytes:
    """Wire bytes of an HMAC-signed envelope (terminal → server, and acks back)."""
    unsigned = _unsigned(type_, sender, msg_id or uuid4_hex(), sent_at_ms, body)
    return _seal(unsigned, lambda data: hmac_sign(secret, data))


def seal_hmac_body_json(
    type_: str,
    sender: str,
    body_json: bytes,
    secret: bytes,
    sent_at_ms: int,
    msg_id: str | None = None,
) -> bytes:
    """:func:`seal_hmac` of the body whose canonical bytes ``body_json`` are, spliced in
    instead of encoded again: the same bytes (``tests/test_seal_splice.py``). The caller
    vouches that ``body_json`` is canonical JSON of an object (the terminal sends its
    journal's sales as stored canonically: :func:`sale_batch_body_json`).

    ``"body"`` is the first key of the canonical envelope, so the envelope with an empty
    body starts ``{"body":{},``; its ``{}`` is replaced by ``body_json``."""
    empty = canonical_json(_unsigned(type_, sender, msg_id or uuid4_hex(), sent_at_ms, {}))
    assert empty.startswith(_EMPTY_BODY)
    data = b"".join((b'{"body":', body_json, empty[len(_EMPTY_BODY) - 1 :]))
    return _signed(data, lambda d: hmac_sign(secret, d))


_EMPTY_BODY = b'{"body":{},'


def sale_batch_body_json(sales_json: list[str]) -> bytes:
    """Canonical bytes of a ``sale_batch`` body (``{"sales": [...]}``) whose sales are
    given as their canonical JSON text."""
    return b"".join((b'{"sales":[', ",".join(sales_json).encode(), b"]}"))


def seal_server(
    type_: str, body: dict[str, Any], key: ServerKey, sent_at_ms: int, msg_id: str | None = None
) -> bytes:
    """Wire bytes of an Ed25519-signed server broadcast (deltas, snapshots, presence)."""
    data = _seal(_unsigned(type_, SERVER_SENDER, msg_id or uuid4_hex(), sent_at_ms, body), key.sign)
    _remember_broadcast(key.public_bytes, data)
    return data


def _parse(data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[dict[str, Any], Envelope, str]:
    raw = parse_json(data, max_bytes)
    if type(raw) is dict and _KEYS.issuperset(raw):
        g = raw.get
        type_, sender, msg_id, at, body, sig = (
            g("type"), g("sender"), g("msg_id"), g("sent_at_ms"), g("body"), g("sig")
        )  # fmt: skip
        if (  # every field as the readers below check it, in one expression; they name a fault
            type(g("schema_version")) is int  # true == 1 in Python: not a version
            and g("schema_version") == SCHEMA_VERSION
            and type(type_) is str
            and type_ in MESSAGE_TYPES
            and type(sender) is str
            and TERMINAL_ID.fullmatch(sender) is not None  # also 1-32 long, no NUL
            and is_text(msg_id, 64)
            and type(at) is int
            and 0 <= at <= INT_MAX
            and type(body) is dict
            and is_text(sig, 200)
        ):
            fields = {  # Envelope(type_, sender, msg_id, at, body), set in one step
                "type": type_,
                "sender": sender,
                "msg_id": msg_id,
                "sent_at_ms": at,
                "body": body,
                "schema_version": SCHEMA_VERSION,
            }
            return raw, frozen_record(Envelope, fields), sig
    return _parse_by_readers(raw)


def _parse_by_readers(raw: Any) -> tuple[dict[str, Any], Envelope, str]:
    """:func:`_parse` of the parsed ``raw`` by the field readers, which name the first
    fault: the specification its one-expression check must match
    (``tests/test_protocol_fast_paths.py``)."""
    raw = obj(raw, "envelope")
    only_keys(raw, _KEYS, "envelope")
    version = raw.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # true == 1 in Python: not a version
        raise ProtocolError("bad_schema_version", f"got {version!r}, speak {SCHEMA_VERSION}")
    type_ = raw.get("type")
    if not isinstance(type_, str) or type_ not in MESSAGE_TYPES:
        raise ProtocolError("bad_field", f"type: {type_!r}")
    env = Envelope(
        type=type_,
        sender=req_terminal_id(raw, "sender"),  # a terminal's id, or "server"
        msg_id=req_str(raw, "msg_id", max_len=64),
        sent_at_ms=req_int(raw, "sent_at_ms"),
        body=obj(raw.get("body"), "body"),
    )
    sig = req_str(raw, "sig", max_len=200)
    return raw, env, sig


def peek_sender(data: bytes | str) -> tuple[str, str]:
    """(type, sender) of an envelope, unverified: only for choosing the key to verify with."""
    _, env, _ = _parse(data)
    return env.type, env.sender


def open_envelope(
    data: bytes | str,
    *,
    secret_for: Callable[[str], bytes | None] | None = None,
    server: ServerVerifier | None = None,
    expect_type: str | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Envelope:
    """Parse and verify. HMAC envelopes need ``secret_for(sender)``; server ones ``server``.
    ``max_bytes``: the size bound (MQTT messages keep the default; snapshots over HTTP pass
    ``MAX_SNAPSHOT_BYTES``)."""
    raw, env, sig = _parse(data, max_bytes)
    if expect_type is not None and env.type != expect_type:
        raise ProtocolError("bad_field", f"type: expected {expect_type}, got {env.type}")
    memo = None
    if (
        server is not None
        and sig.startswith(ED25519_PREFIX)
        and type(data) is bytes
        and len(data) <= OPENED_MAX_BYTES
    ):
        memo = (server.public_bytes, data)
        if memo in _opened_broadcasts:
            return env  # this key verified these very bytes: see _opened_broadcasts
    del raw["sig"]  # raw is this call's own parse: the signed part is the rest of it
    signed = canonical_json_of_parsed(raw, data)
    if sig.startswith(HMAC_PREFIX) and secret_for is not None:
        secret = secret_for(env.sender)
        if secret is None:
            raise ProtocolError("unknown_terminal", env.sender)
        if not hmac_verify(secret, signed, sig):
            raise ProtocolError("bad_signature", f"from {env.sender}")
    elif sig.startswith(ED25519_PREFIX) and server is not None:
        if env.sender != SERVER_SENDER or not server.verify(signed, sig):
            raise ProtocolError("bad_signature", "server signature")
        if memo is not None:
            _remember_broadcast(*memo)
    else:
        raise ProtocolError("bad_signature", "no acceptable signature scheme")
    return env
