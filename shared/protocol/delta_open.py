"""Opening a published delta: verified and decoded once per process, not once per terminal.

The server publishes each delta once and every terminal opens it: in the simulator, all of
them in one process, each checking the same signature and decoding the same changes. Both
steps are pure functions of (server public key, wire bytes), so the first successful
opening is kept (:class:`~shared.protocol.memo.FifoMemo`, the same bound as the verified
broadcasts in :mod:`shared.protocol.envelope`) and the others take its :class:`Delta`
and its salvage faults. The records are frozen; a terminal only reads them. A refused
delta is not kept: it is checked in full every time it comes.
"""

from __future__ import annotations

from shared.protocol.codec import ProtocolError
from shared.protocol.envelope import OPENED_MAX_BYTES, open_envelope
from shared.protocol.memo import FifoMemo
from shared.protocol.messages import Delta
from shared.protocol.signing import ServerVerifier

_opened_deltas: FifoMemo[tuple[Delta, tuple[ProtocolError, ...]]] = FifoMemo(256)


def open_delta(payload: bytes, server: ServerVerifier) -> tuple[Delta, list[ProtocolError]]:
    """The delta a server broadcast carries, verified with ``server``, and the faults of
    the changes it had to skip (:func:`~shared.protocol.messages.salvage_changes`)."""
    small = type(payload) is bytes and len(payload) <= OPENED_MAX_BYTES
    key = (server.public_bytes, payload) if small else None
    if key is not None:
        hit = _opened_deltas.get(key)
        if hit is not None:
            return hit[0], list(hit[1])
    env = open_envelope(payload, server=server, expect_type="delta")
    faults: list[ProtocolError] = []
    delta = Delta.from_body(env.body, faults)
    if key is not None:
        _opened_deltas.put(key, (delta, tuple(faults)))
    return delta, faults
