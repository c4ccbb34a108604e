"""From what the diner presented to the card that pays: the hook before authorization.

:meth:`Identifier.resolve` runs inside the terminal's journal lock, before
:func:`terminal.authorize.authorize`. It turns a :class:`~terminal.authorize.TapRequest`
carrying a raw ``credential`` into one carrying the paying card:

* ``method="card"``: the NFC tap's UID and, if the card sent one, its SUN URL →
  :class:`~terminal.card_check.CardChecker` (cryptographic check, UID-only policy);
* ``method="qr"``: the scanned text → :class:`~terminal.qr_verify.QrVerifier` (signature,
  freshness, used once); offline, the credential's allowance caps the holder's unconfirmed
  spending at this terminal;
* ``method="ecny"``: a digital RMB order the gateway already reported paid →
  :mod:`terminal.ecny` builds the approved decision (no card, no purse);
* anything else (face, or a card id typed by the simulator) passes through unchanged.

A refusal comes back as ``reason`` and the terminal declines with its zh-CN text.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass

from hardware.ntag424 import SunKeys
from terminal.authorize import Decision, TapRequest
from terminal.card_check import CardChecker
from terminal.config import TerminalConfig
from terminal.ecny import paid_order_decision
from terminal.qr_verify import QrAccepted, QrVerifier
from terminal.rules import CanteenRules


@dataclass(frozen=True)
class Resolved:
    request: TapRequest
    credential: str | None = None  # recorded in the sale (the server checks it again)
    reason: str | None = None  # decline before authorizing
    max_offline_total_fen: int | None = None  # a tighter offline cap for this method
    decision: Decision | None = None  # already decided (a paid digital RMB order)


def sun_keys_from_config(config: TerminalConfig) -> SunKeys | None:
    """The NTAG 424 keys from the terminal's config (None: no SUN checks)."""
    if not config.sun_master_key_hex:
        return None
    return SunKeys.from_master(bytes.fromhex(config.sun_master_key_hex))


class Identifier:
    def __init__(self, conn: sqlite3.Connection, sun_keys: SunKeys | None = None) -> None:
        self.conn = conn
        self.cards = CardChecker(conn, sun_keys)
        self.qr = QrVerifier(conn)

    def resolve(self, request: TapRequest, now_ms: int, rules: CanteenRules) -> Resolved:
        credential = request.credential
        if request.method == "card" and request.card_id:
            verdict = self.cards.check(request.card_id, credential, rules.allow_uid_only, now_ms)
            if verdict.card_id != request.card_id or credential is not None:
                request = dataclasses.replace(request, card_id=verdict.card_id, credential=None)
            return Resolved(
                request,
                credential=verdict.credential,
                reason=verdict.reason,
            )
        if request.method == "qr":
            accepted = self.qr.accept(credential or "", now_ms)
            if not isinstance(accepted, QrAccepted):
                return Resolved(dataclasses.replace(request, card_id=None), reason=accepted)
            return Resolved(
                dataclasses.replace(request, card_id=accepted.code.card_id),
                credential=accepted.code.text,
                max_offline_total_fen=accepted.offline_allowance_fen,
            )
        if request.method == "ecny":
            decision, reason = paid_order_decision(self.conn, credential)
            return Resolved(request, credential=credential, reason=reason, decision=decision)
        return Resolved(request, credential=credential)
