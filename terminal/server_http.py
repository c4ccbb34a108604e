"""The terminal's HTTP calls to the server: enrolment, snapshot, delta catch-up, clock probe,
its next key during a rotation, the online PIN check for a sale above the no-PIN limit, the
download of an offered update bundle (checked by ``terminal.updater`` against the offer and
the release key), and the operator's day close.

HTTPS is verified against the system's CA store, or against ``ca_file`` (a deployment's own
CA) when the configuration names one. :func:`enrol` refuses a plain ``http://`` address
except to this machine itself (``insecure_url``): the answer carries the terminal's secret.

Uses only the standard library (``urllib``): the terminal needs a few calls, not a client
framework. Snapshot and delta responses are server-signed envelopes, verified before use;
the clock probe reads the public health endpoint's ``now_ms``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from shared.errors import CATALOG, DomainError
from shared.protocol import (
    Delta,
    ProtocolError,
    ServerVerifier,
    Snapshot,
    hmac_sign,
    open_envelope,
    terminal_request_bytes,
)
from shared.protocol.codec import MAX_SNAPSHOT_BYTES
from shared.protocol.rekey import Rekey


class ServerUnreachable(Exception):
    """The HTTP call failed (network, server down, or a refusal); the caller retries later."""


class ServerRefused(ServerUnreachable):
    """The server answered with a refusal (4xx and an error ``code``): sending the same
    request again will not help."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# One HTTP exchange: (method, url, headers, body, timeout in seconds) → the response body;
# ServerRefused for a refusal with a code, ServerUnreachable when there is no answer.
Send = Callable[[str, str, dict[str, str], bytes | None, float], bytes]


def urllib_sender(context: ssl.SSLContext | None = None) -> Send:
    """The real exchange, over the network (standard library only), TLS checked with
    ``context``."""

    def send(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout_s: float) -> bytes:
        path = urllib.parse.urlsplit(url).path  # an error names the path only: never a body (a PIN)
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s, context=context) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            code = _error_code(exc) if 400 <= exc.code < 500 else None
            if code is not None:
                raise ServerRefused(f"{method} {path}: {exc.code} {code}", code) from exc
            raise ServerUnreachable(f"{method} {path}: {exc}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServerUnreachable(f"{method} {path}: {exc}") from exc

    return send


class ServerHttp:
    def __init__(
        self,
        base_url: str,
        terminal_id: str,
        secret: bytes,
        verifier: ServerVerifier,
        timeout_s: float = 10.0,
        ca_file: str = "",
        secret_of: Callable[[], bytes] | None = None,
        send: Send | None = None,
    ) -> None:
        """``secret_of``: the key to sign with, asked per request (it changes on rotation)."""
        self.base_url = base_url.rstrip("/")
        self.terminal_id = terminal_id
        self._secret_of = secret_of or (lambda: secret)
        self._verifier = verifier
        self.timeout_s = timeout_s
        # the simulator hands in its network (and loads no trust store: ~20 ms a terminal start)
        self._send = send or urllib_sender(tls_context(ca_file))

    def _get(self, path: str, query: str, now_ms: int) -> bytes:
        return self._call("GET", path, query, now_ms)

    def _call(
        self,
        method: str,
        path: str,
        query: str,
        now_ms: int,
        body: bytes | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        nonce = secrets.token_hex(16)  # the server refuses a nonce it has seen: no replays
        message = terminal_request_bytes(self.terminal_id, now_ms, nonce, method, path, query)
        headers = {
            "X-Terminal-Id": self.terminal_id,
            "X-Terminal-Time": str(now_ms),
            "X-Terminal-Nonce": nonce,
            "X-Terminal-Sig": hmac_sign(self._secret_of(), message),
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.base_url + path + (f"?{query}" if query else "")
        return self._send(method, url, headers, body, timeout_s or self.timeout_s)

    def pin_check(self, card_id: str, pin: str, amount_fen: int, now_ms: int) -> dict[str, object]:
        """The server's verdict on a cardholder's PIN for one sale (``result``: ok with
        ``approval_id``, wrong with ``tries_left``, locked, not_set, card_blocked,
        card_unknown). The query names the body's SHA-256, so the request signature covers
        the body. ServerUnreachable when there is no answer."""
        body = json.dumps({"card_id": card_id, "pin": pin, "amount_fen": amount_fen}).encode()
        return self._post_signed("pin-check", body, now_ms, "result")

    def bundle(self, kind: str, version: str, now_ms: int) -> bytes:
        """An offered update bundle's bytes, as the server serves them (unchecked here)."""
        path = f"/api/v1/terminals/{self.terminal_id}/updates/{kind}-{version}"
        return self._call("GET", path, "", now_ms, timeout_s=max(self.timeout_s, 120.0))

    def day_close(self, report: dict[str, object], now_ms: int) -> dict[str, object]:
        """Send one day close (Z-report, :mod:`terminal.day_close`); the server's answer
        (``status``: matched, waiting or mismatch). Signed like the PIN check: the query
        names the body's SHA-256. ServerRefused for a refusal, ServerUnreachable otherwise."""
        body = json.dumps(report, ensure_ascii=False, sort_keys=True).encode()
        return self._post_signed("day-closes", body, now_ms, "status")

    def _post_signed(self, endpoint: str, body: bytes, now_ms: int, answer_key: str) -> dict[str, object]:
        """POST the JSON ``body`` to this terminal's ``endpoint``, the query naming the body's
        SHA-256 so the request signature covers the body. The answer must be a JSON object
        with a string ``answer_key``, else ServerUnreachable."""
        data = self._call(
            "POST",
            f"/api/v1/terminals/{self.terminal_id}/{endpoint}",
            f"body={hashlib.sha256(body).hexdigest()}",
            now_ms,
            body,
        )
        try:
            answer = json.loads(data)
        except ValueError as exc:
            raise ServerUnreachable(f"{endpoint}: not JSON") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get(answer_key), str):
            raise ServerUnreachable(f"{endpoint}: no {answer_key}")
        return answer

    def snapshot(self, now_ms: int, faults: list[ProtocolError] | None = None) -> Snapshot:
        data = self._get(f"/api/v1/terminals/{self.terminal_id}/snapshot", "", now_ms)
        env = open_envelope(data, server=self._verifier, expect_type="snapshot", max_bytes=MAX_SNAPSHOT_BYTES)
        return Snapshot.from_body(env.body, faults)

    def deltas_since(
        self, version: int, now_ms: int, faults: list[ProtocolError] | None = None
    ) -> list[Delta]:
        """The deltas after ``version``; with ``faults``, undecodable changes are skipped and
        their errors appended (:func:`shared.protocol.messages.salvage_changes`)."""
        data = self._get(f"/api/v1/terminals/{self.terminal_id}/deltas", f"since={version}", now_ms)
        out = []
        for item in json.loads(data):
            env = open_envelope(
                json.dumps(item, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode(),
                server=self._verifier,
                expect_type="delta",
            )
            out.append(Delta.from_body(env.body, faults))
        return out

    def rekey(self, now_ms: int) -> Rekey | None:
        """The next key the server offers this terminal (sealed), or None."""
        data = self._call("GET", f"/api/v1/terminals/{self.terminal_id}/rekey", "", now_ms)
        if not data:
            return None
        env = open_envelope(data, server=self._verifier, expect_type="rekey")
        return Rekey.from_body(env.body)

    def clock_offset(self, local_ms: Callable[[], int]) -> tuple[int, int]:
        """(server − terminal offset, round trip) in ms, NTP style: the server's ``now_ms``
        is compared with the midpoint of the request on the terminal's clock."""
        t0 = local_ms()
        data = self._send("GET", self.base_url + "/api/v1/health", {}, None, self.timeout_s)
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise ServerUnreachable(f"GET /api/v1/health: {exc}") from exc
        t1 = local_ms()
        server_ms = body.get("now_ms") if isinstance(body, dict) else None
        if not isinstance(server_ms, int) or isinstance(server_ms, bool):
            raise ServerUnreachable("health: no now_ms")
        return server_ms - (t0 + t1) // 2, t1 - t0


def _error_code(exc: urllib.error.HTTPError) -> str | None:
    """The stable error code of a JSON refusal, or None."""
    try:
        body = json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Certificates checked against the system's CAs, or against ``ca_file``."""
    return ssl.create_default_context(cafile=ca_file or None)


def check_enrol_url(url: str) -> str:
    """The server's base URL for enrolment: https://, or http:// to this machine only."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DomainError("insecure_url", f"{url!r} is not an https:// address")
    if parts.scheme == "http":
        host = parts.hostname
        loopback = host == "localhost"
        try:
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        except ValueError:
            pass
        if not loopback:
            raise DomainError("insecure_url", f"{url}: the enrolment answer holds the terminal's secret")
    return url.rstrip("/")


def enrol(server_url: str, code: str, *, ca_file: str = "", timeout_s: float = 15.0) -> dict[str, Any]:
    """Redeem an enrolment code: the terminal's configuration as the server returns it. A
    refusal raises the server's own code (``enrolment_code_used`` …); no answer raises
    ``server_unreachable``."""
    base = check_enrol_url(server_url)
    req = urllib.request.Request(
        base + "/api/v1/enrol",
        data=json.dumps({"code": code}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=tls_context(ca_file)) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            refusal = json.loads(exc.read())
        except ValueError:
            refusal = {}
        code_ = refusal.get("code") if isinstance(refusal, dict) else None
        if isinstance(code_, str) and code_ in CATALOG:
            raise DomainError(code_, str(refusal.get("detail") or "")) from exc
        raise DomainError("server_unreachable", f"POST /api/v1/enrol: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DomainError("server_unreachable", f"{base}: {exc}") from exc
    if not isinstance(answer, dict):
        raise DomainError("server_unreachable", "the enrolment answer is not a JSON object")
    return answer
