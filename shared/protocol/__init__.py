"""The terminal–server contract, version 1. Pure code: no sockets, files or clocks.

Every message is an *envelope* — ``schema_version``, ``type``, ``sender``, ``msg_id``,
``sent_at_ms``, ``body`` and ``sig`` — encoded as canonical JSON (sorted keys, no spaces,
UTF-8, integers only: a float anywhere is malformed, which also keeps money in fen).

Upstream (terminal → server) envelopes are signed with HMAC-SHA256 under the terminal's own
secret; downstream acknowledgements are HMAC-signed under the same secret, and the broadcast
deltas and HTTP snapshots are signed by the server's Ed25519 key, whose public half every
terminal receives when it is provisioned. Decoding checks the shape and the signature and
raises :class:`ProtocolError` with a stable code (``malformed``, ``bad_signature`` …).
"""

from shared.protocol import topics
from shared.protocol.codec import MAX_MESSAGE_BYTES, SCHEMA_VERSION, ProtocolError, canonical_json
from shared.protocol.envelope import Envelope, open_envelope, peek_sender, seal_hmac, seal_server
from shared.protocol.messages import (
    Ack,
    Delta,
    Item,
    Sale,
    SaleBatch,
    SaleResult,
    ServerStatus,
    Snapshot,
    Status,
)
from shared.protocol.reversals import Reversal, ReversalAck, ReversalBatch, ReversalResult
from shared.protocol.signing import (
    ServerKey,
    ServerVerifier,
    broker_password,
    hmac_sign,
    hmac_verify,
    terminal_request_bytes,
)
from shared.protocol.updates import OfferedBundle, UpdateOffer, UpdateReport

# most deltas one catch-up page carries; a shorter page means caught up
DELTA_PAGE_SIZE = 500

__all__ = [
    "DELTA_PAGE_SIZE",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "Ack",
    "Delta",
    "Envelope",
    "Item",
    "OfferedBundle",
    "ProtocolError",
    "Reversal",
    "ReversalAck",
    "ReversalBatch",
    "ReversalResult",
    "Sale",
    "SaleBatch",
    "SaleResult",
    "ServerKey",
    "ServerStatus",
    "ServerVerifier",
    "Snapshot",
    "Status",
    "UpdateOffer",
    "UpdateReport",
    "broker_password",
    "canonical_json",
    "hmac_sign",
    "hmac_verify",
    "open_envelope",
    "peek_sender",
    "seal_hmac",
    "seal_server",
    "terminal_request_bytes",
    "topics",
]
