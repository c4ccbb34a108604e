"""Face pay at the terminal: camera → face → gallery match → (second factor) → sale.

:class:`FacePay` is the device side of the pure rules in :mod:`shared.face_match`:

1. capture up to ``frames`` frames until one shows a usable face (:func:`choose_payer`:
   the largest face, big enough, and not two people side by side);
2. encode it and match it 1:N against the cached gallery (loaded once per gallery change);
3. :func:`resolve_payer`: a clear match pays with the holder's active card; a near-threshold
   or ambiguous one shows "请输入卡号后四位" and reads 4 digits from the keypad (two tries);
4. the sale then goes through :meth:`Terminal.tap` like a card tap (``method="face"``): the
   same authorization, journal and display ("支付成功" / the zh-CN reason).

A refusal before authorization (not recognised, wrong digits) is recorded as a decline.
The face pay thread reads the cache through its own SQLite connection (WAL readers do not
block the journal).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

from hardware.camera import Camera
from hardware.display import Screen
from hardware.face_engine import FaceEngine
from hardware.keypad import Keypad, read_digits
from shared.face_match import FacePolicy, Match, Resolution, choose_payer, match, resolve_payer
from terminal.agent import Terminal
from terminal.authorize import Decision, TapRequest
from terminal.face_cache import GalleryCache, active_cards

log = logging.getLogger(__name__)
PROMPT = "请输入卡号后四位"


@dataclass(frozen=True)
class FacePayResult:
    match: Match | None  # None when no usable face was seen
    resolution: Resolution
    decision: Decision | None = None  # the sale decision, when it got that far
    frames: int = 0

    @property
    def approved(self) -> bool:
        return self.decision is not None and self.decision.approved


class FacePay:
    def __init__(
        self,
        terminal: Terminal,
        camera: Camera,
        engine: FaceEngine,
        keypad: Keypad | None = None,
        *,
        frames: int = 5,
        key_timeout_s: float = 15.0,
    ) -> None:
        self.terminal = terminal
        self.camera = camera
        self.engine = engine
        self.keypad = keypad
        self.frames = frames
        self.key_timeout_s = key_timeout_s
        self._conn = sqlite3.connect(terminal.config.db_path, check_same_thread=False, timeout=30)
        self.gallery = GalleryCache(self._conn)

    def close(self) -> None:
        self._conn.close()

    def policy(self) -> FacePolicy:
        """The city's face policy (settings ``face``); a malformed one is logged and the
        defaults apply, so a bad setting cannot switch face pay to guessing."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        try:
            return FacePolicy.from_config(json.loads(row[0]).get("face") if row else None)
        except (ValueError, TypeError, AttributeError) as exc:
            log.error("face policy setting refused, using defaults: %s", exc)
            return FacePolicy()

    def look(self, policy: FacePolicy) -> tuple[Match | None, str | None, int]:
        """Find a usable face and match it: (match, refusal code, frames used)."""
        reason: str | None = "face_not_found"
        for n in range(1, self.frames + 1):
            frame = self.camera.capture()
            if frame is None:
                continue
            boxes = self.engine.detect(frame)
            i, reason = choose_payer(boxes, policy.min_face_px)
            if reason is None:
                return match(self.gallery.gallery(), self.engine.encode(frame, boxes[i]), policy), None, n
        return None, reason, self.frames

    def pay(self, request: TapRequest | None = None) -> FacePayResult:
        """One face payment; ``request`` gives the kind/items/amount (card_id is filled in)."""
        request = request or TapRequest(None, method="face")
        policy = self.policy()
        m, reason, frames = self.look(policy)
        if m is None:
            res = Resolution(reason=reason)
            self.terminal.decline("face", reason or "face_not_found")
            return FacePayResult(None, res, frames=frames)
        res = resolve_payer(m, self._cards(m), None)
        attempts = 0
        while res.ask_digits:
            attempts += 1
            digits = self._ask_digits()
            if digits is None:
                res = Resolution(reason="input_timeout")
                break
            res = resolve_payer(m, self._cards(m), digits)
            if res.reason == "second_factor_failed" and attempts < policy.second_factor_attempts:
                self.terminal.display.show(Screen((f"{PROMPT}：不符，请重试",), "error"))
                res = Resolution(ask_digits=True)
        if res.card_id is None:
            self.terminal.decline("face", res.reason or "face_not_recognized")
            return FacePayResult(m, res, frames=frames)
        decision, _ = self.terminal.tap(
            TapRequest(
                res.card_id,
                method="face",
                kind=request.kind,
                items=request.items,
                amount_fen=request.amount_fen,
            )
        )
        return FacePayResult(m, res, decision, frames)

    def _cards(self, m: Match) -> dict[str, list[str]]:
        holders = [m.holder_id] if m.holder_id else list(m.candidates)
        return {h: active_cards(self._conn, h) for h in holders}

    def _ask_digits(self) -> str | None:
        if self.keypad is None:
            return None
        display = self.terminal.display
        self.keypad.clear()
        display.show(Screen((PROMPT, "＿＿＿＿"), "info"))
        return read_digits(
            self.keypad,
            4,
            self.key_timeout_s,
            on_progress=lambda k: display.show(Screen((PROMPT, "●" * k + "＿" * (4 - k)), "info")),
        )
