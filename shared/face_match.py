"""1:N face matching and the face-pay decision rules: pure numpy, no I/O, no dlib.

:class:`Gallery` holds every enrolled encoding as one ``float32`` matrix with its squared
norms precomputed, so a probe costs one matrix–vector product:
``d² = ‖g‖² + ‖p‖² − 2·g·p``. A person may have several enrolled faces; a person's
distance is their nearest face's.

:func:`decide` turns the nearest persons into an outcome, by :class:`FacePolicy`:

* ``no_match`` — the nearest person is farther than ``threshold``: not recognised;
* ``accept`` — nearest at or under ``confident`` and every other person at least ``margin``
  farther: this person pays;
* ``second_factor`` — within ``threshold`` but near it (above ``confident``), or another
  person within ``margin``: do not guess; ask for the last 4 digits of the card number
  (:func:`resolve_second_factor` picks the candidate whose card matches, if exactly one does).

Thresholds come from configuration as integers in thousandths (canonical JSON has no
floats): ``{"threshold_milli": 550, "margin_milli": 100, "confident_milli": 480}``.

One definition for both sides: the terminal pays by it (:mod:`terminal.face_pay`), the server
checks enrollments against it (a new face too close to another person's) and evaluates a
policy on photo sets with the very rules the terminals run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DIMENSIONS = 128
MAX_CANDIDATES = 3  # persons offered to the second factor


@dataclass(frozen=True)
class FacePolicy:
    threshold: float = 0.55
    margin: float = 0.10
    confident: float = 0.48
    min_face_px: int = 80  # a face smaller than this in a frame is too far from the camera
    second_factor_attempts: int = 2

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> FacePolicy:
        """From a settings object like ``{"threshold_milli": 550, ...}``; missing keys keep
        their defaults; a nonsensical combination is refused."""
        c = dict(config or {})
        d = cls()
        policy = cls(
            threshold=int(c.get("threshold_milli", round(d.threshold * 1000))) / 1000,
            margin=int(c.get("margin_milli", round(d.margin * 1000))) / 1000,
            confident=int(c.get("confident_milli", round(d.confident * 1000))) / 1000,
            min_face_px=int(c.get("min_face_px", d.min_face_px)),
            second_factor_attempts=int(c.get("second_factor_attempts", d.second_factor_attempts)),
        )
        if not (0 < policy.confident <= policy.threshold < 2 and 0 <= policy.margin < 2):
            raise ValueError(f"face policy out of range: {policy}")
        return policy

    def to_config(self) -> dict[str, int]:
        return {
            "threshold_milli": round(self.threshold * 1000),
            "margin_milli": round(self.margin * 1000),
            "confident_milli": round(self.confident * 1000),
            "min_face_px": self.min_face_px,
            "second_factor_attempts": self.second_factor_attempts,
        }


@dataclass(frozen=True)
class Match:
    outcome: str  # accept | second_factor | no_match
    holder_id: str | None = None  # accept: who pays
    distance: float | None = None  # nearest person's distance
    runner_up: float | None = None  # second-nearest person's distance
    candidates: tuple[str, ...] = ()  # second_factor: persons to tell apart, nearest first


class Gallery:
    """Every enrolled face as one matrix; build once, match many times."""

    def __init__(self, face_ids: Sequence[str], holder_ids: Sequence[str], matrix: np.ndarray) -> None:
        if matrix.ndim != 2 or matrix.shape[1] != DIMENSIONS or matrix.shape[0] != len(holder_ids):
            raise ValueError(f"gallery matrix shape {matrix.shape} for {len(holder_ids)} faces")
        self.face_ids = list(face_ids)
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.sq_norms = np.einsum("ij,ij->i", self.matrix, self.matrix)
        self.holders, self.owner = np.unique(np.asarray(holder_ids, dtype=object), return_inverse=True)
        self.owner = self.owner.astype(np.int64)

    @classmethod
    def from_raw(cls, rows: Iterable[tuple[str, str, bytes]]) -> Gallery:
        """From (face_id, holder_id, 512 raw float32 bytes) rows, as cached by a terminal."""
        rows = list(rows)
        matrix = (
            np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), DIMENSIONS)
            if rows
            else np.zeros((0, DIMENSIONS), np.float32)
        )
        return cls([r[0] for r in rows], [r[1] for r in rows], matrix)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def nearest(self, probe: np.ndarray, persons: int = MAX_CANDIDATES + 1) -> list[tuple[str, float]]:
        """The ``persons`` nearest distinct persons as (holder_id, distance), nearest first."""
        n = len(self)
        if n == 0:
            return []
        p = np.asarray(probe, dtype=np.float32).reshape(DIMENSIONS)
        d2 = self.sq_norms + np.float32(p @ p) - 2.0 * (self.matrix @ p)
        # a few nearest faces usually hold the nearest persons; widen if one person has many
        k = min(n, 8 * persons)
        while True:
            idx = np.argpartition(d2, k - 1)[:k] if k < n else np.arange(n)
            idx = idx[np.argsort(d2[idx], kind="stable")]
            out: list[tuple[str, float]] = []
            seen: set[int] = set()
            for i in idx:
                o = int(self.owner[i])
                if o not in seen:
                    seen.add(o)
                    out.append((str(self.holders[o]), float(np.sqrt(max(float(d2[i]), 0.0)))))
                    if len(out) == persons:
                        return out
            if k >= n:
                return out
            k = min(n, k * 4)


def decide(nearest: Sequence[tuple[str, float]], policy: FacePolicy) -> Match:
    """The outcome for the nearest persons (see the module docstring)."""
    if not nearest or nearest[0][1] > policy.threshold:
        return Match(
            "no_match",
            distance=nearest[0][1] if nearest else None,
            runner_up=nearest[1][1] if len(nearest) > 1 else None,
        )
    best_holder, best = nearest[0]
    runner_up = nearest[1][1] if len(nearest) > 1 else None
    close = [h for h, d in nearest[1:] if d <= policy.threshold and d - best < policy.margin]
    if not close and best <= policy.confident:
        return Match("accept", best_holder, best, runner_up)
    return Match("second_factor", None, best, runner_up, tuple([best_holder, *close][:MAX_CANDIDATES]))


def match(gallery: Gallery, probe: np.ndarray, policy: FacePolicy) -> Match:
    return decide(gallery.nearest(probe), policy)


def card_last4(card_id: str) -> str:
    """The last four digits of a card number (what a diner types on the keypad)."""
    return "".join(ch for ch in card_id if ch.isdigit())[-4:]


def resolve_second_factor(
    candidates: Sequence[str], cards_by_holder: Mapping[str, Sequence[str]], digits: str
) -> tuple[str, str] | None:
    """(holder_id, card_id) of the one candidate with an active card ending in ``digits``;
    None when no candidate's does, or more than one's does (never guess)."""
    if len(digits) != 4 or not digits.isdigit():
        return None
    hits = [
        (holder, card)
        for holder in candidates
        for card in cards_by_holder.get(holder, ())
        if card_last4(card) == digits
    ]
    if len({h for h, _ in hits}) != 1:
        return None
    return hits[0]


@dataclass(frozen=True)
class Resolution:
    """Who pays after a match (and, when asked, the typed digits)."""

    holder_id: str | None = None
    card_id: str | None = None
    ask_digits: bool = False  # second factor needed: prompt for the card's last 4 digits
    reason: str | None = None  # a refusal code


def choose_payer(boxes: Sequence[tuple[int, int, int, int]], min_face_px: int) -> tuple[int, str | None]:
    """Which detected face pays: the largest, if it is big enough and clearly the one in
    front. Returns (index, None) or (-1, refusal code)."""
    if not boxes:
        return -1, "face_not_found"
    heights = [b[2] - b[0] for b in boxes]
    order = sorted(range(len(boxes)), key=lambda i: -heights[i])
    first = order[0]
    if heights[first] < min_face_px:
        return -1, "face_too_small"
    if len(order) > 1 and heights[order[1]] * 10 >= heights[first] * 7:
        return -1, "face_one_at_a_time"  # two faces of similar size: whose purse?
    return first, None


def resolve_payer(m: Match, cards_by_holder: Mapping[str, Sequence[str]], digits: str | None) -> Resolution:
    """The card to charge for a match: the holder's active card on ``accept``; on
    ``second_factor`` the candidate whose card ends in ``digits`` (asked for when None)."""
    if m.outcome == "no_match":
        return Resolution(reason="face_not_recognized")
    if m.outcome == "accept":
        assert m.holder_id is not None
        cards = cards_by_holder.get(m.holder_id, ())
        if not cards:
            return Resolution(holder_id=m.holder_id, reason="card_blocked")
        return Resolution(holder_id=m.holder_id, card_id=cards[0])
    if digits is None:
        return Resolution(ask_digits=True)
    hit = resolve_second_factor(m.candidates, cards_by_holder, digits)
    if hit is None:
        return Resolution(reason="second_factor_failed")
    return Resolution(holder_id=hit[0], card_id=hit[1])
