"""Update messages of protocol v1: the server's offer, the terminal's report.

* :class:`UpdateOffer` (server → one terminal, Ed25519-signed, **retained** on
  ``canteen/v1/t/<id>/down/update``): every bundle offered to that terminal now, at most one
  per kind (``terminal``, ``firmware``), with the bundle's SHA-256 and size so the download
  can be checked before the release signature is. An empty list withdraws every offer. The
  body names the terminal, so an offer cannot be replayed to another one.
* :class:`UpdateReport` (terminal → server, HMAC-signed, on ``.../up/update``): what became
  of a bundle — ``installed`` (verified and unpacked beside the running version),
  ``running`` (the new version is up: the server's ack of this report is what confirms the
  update, see ``terminal.updater``), ``refused`` (with a code: ``update_bad_signature``,
  ``update_downgrade``, ``update_corrupted`` …), ``failed`` (download, disk, the board) and
  ``rolled_back`` (the new version did not reach the server in time). The server answers
  each report with an :class:`~shared.protocol.messages.Ack` after it committed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.protocol.codec import (
    ProtocolError,
    obj,
    only_keys,
    opt_str,
    req_enum,
    req_int,
    req_list,
    req_str,
)

UPDATE_KINDS = frozenset({"terminal", "firmware"})
REPORT_STATES = frozenset({"installed", "running", "refused", "failed", "rolled_back"})
MAX_BUNDLE_SIZE = 64 * 1_048_576  # as shared.release.MAX_BUNDLE_BYTES
_SHA256_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class OfferedBundle:
    kind: str
    version: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, d: Any) -> OfferedBundle:
        d = obj(d, "offer")
        only_keys(d, frozenset({"kind", "version", "sha256", "size"}), "offer")
        sha = req_str(d, "sha256", max_len=64)
        if len(sha) != 64 or not _SHA256_CHARS.issuperset(sha):
            raise ProtocolError("bad_field", "sha256: 64 lower-case hex digits")
        return cls(
            kind=req_enum(d, "kind", UPDATE_KINDS),
            version=req_str(d, "version", max_len=32),
            sha256=sha,
            size=req_int(d, "size", lo=1, hi=MAX_BUNDLE_SIZE),
        )


@dataclass(frozen=True)
class UpdateOffer:
    terminal_id: str
    offers: tuple[OfferedBundle, ...] = ()

    def to_body(self) -> dict[str, Any]:
        return {"terminal_id": self.terminal_id, "offers": [o.to_dict() for o in self.offers]}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> UpdateOffer:
        only_keys(body, frozenset({"terminal_id", "offers"}), "body")
        offers = tuple(
            OfferedBundle.from_dict(o) for o in req_list(body, "offers", max_len=len(UPDATE_KINDS))
        )
        if len({o.kind for o in offers}) != len(offers):
            raise ProtocolError("bad_field", "offers: one per kind")
        return cls(req_str(body, "terminal_id", max_len=64), offers)

    def of_kind(self, kind: str) -> OfferedBundle | None:
        return next((o for o in self.offers if o.kind == kind), None)


@dataclass(frozen=True)
class UpdateReport:
    kind: str
    version: str  # the bundle's version this report is about
    state: str
    running: str  # the version running when the report was made
    code: str | None = None
    detail: str | None = None

    def to_body(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "state": self.state,
            "running": self.running,
            "code": self.code,
            "detail": self.detail,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> UpdateReport:
        only_keys(body, frozenset({"kind", "version", "state", "running", "code", "detail"}), "body")
        return cls(
            kind=req_enum(body, "kind", UPDATE_KINDS),
            version=req_str(body, "version", max_len=32),
            state=req_enum(body, "state", REPORT_STATES),
            running=req_str(body, "running", max_len=32, allow_empty=True),
            code=opt_str(body, "code", max_len=64),
            detail=opt_str(body, "detail", max_len=500),
        )
