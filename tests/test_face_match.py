"""1:N matching and the face-pay decision rules (pure: no dlib, no database)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.face_match import (
    FacePolicy,
    Gallery,
    Match,
    choose_payer,
    decide,
    resolve_payer,
    resolve_second_factor,
)

POLICY = FacePolicy(threshold=0.55, margin=0.10, confident=0.48)


def unit(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 1 / np.sqrt(128), 128).astype(np.float32)


def near(v: np.ndarray, dist: float, rng: np.random.Generator) -> np.ndarray:
    """A vector exactly ``dist`` away from ``v``."""
    d = rng.normal(0, 1, 128)
    return (v + dist * d / np.linalg.norm(d)).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_gallery_finds_the_same_nearest_persons_as_brute_force(
    faces: int, people_per: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    holders = [f"H{rng.integers(0, max(1, faces // people_per))}" for _ in range(faces)]
    matrix = np.stack([unit(rng) for _ in range(faces)])
    gallery = Gallery([f"F{i}" for i in range(faces)], holders, matrix)
    probe = unit(rng)
    dist = np.linalg.norm(matrix - probe, axis=1)
    best: dict[str, float] = {}
    for h, d in zip(holders, dist, strict=True):
        best[h] = min(best.get(h, 9.0), float(d))
    expected = sorted(best.items(), key=lambda kv: kv[1])[:4]
    got = gallery.nearest(probe, persons=4)
    assert np.allclose([d for _, d in got], [d for _, d in expected], atol=1e-5)
    assert len({h for h, _ in got}) == len(got)  # distinct persons
    for h, d in got:
        assert d == pytest.approx(best[h], abs=1e-5)  # each person's nearest face


def test_a_person_with_many_faces_does_not_hide_the_runner_up() -> None:
    rng = np.random.default_rng(1)
    a = unit(rng)
    matrix = np.stack([near(a, 0.01 * (i + 1), rng) for i in range(100)] + [near(a, 0.3, rng)])
    gallery = Gallery([f"F{i}" for i in range(101)], ["A"] * 100 + ["B"], matrix)
    (h1, d1), (h2, d2) = gallery.nearest(a, persons=2)
    assert (h1, h2) == ("A", "B")
    assert d2 == pytest.approx(0.3, abs=1e-4)


def test_an_empty_gallery_recognises_nobody() -> None:
    m = decide(Gallery.from_raw([]).nearest(np.zeros(128, np.float32)), POLICY)
    assert m.outcome == "no_match"


def test_a_clear_close_match_pays_without_a_second_factor() -> None:
    m = decide([("A", 0.35), ("B", 0.80)], POLICY)
    assert (m.outcome, m.holder_id) == ("accept", "A")


def test_a_face_beyond_the_threshold_is_not_recognised() -> None:
    assert decide([("A", 0.56), ("B", 0.9)], POLICY).outcome == "no_match"


def test_a_near_threshold_match_asks_for_the_second_factor_instead_of_guessing() -> None:
    m = decide([("A", 0.52), ("B", 0.90)], POLICY)
    assert (m.outcome, m.holder_id, m.candidates) == ("second_factor", None, ("A",))


def test_two_people_within_the_margin_ask_for_the_second_factor_with_both() -> None:
    m = decide([("A", 0.30), ("B", 0.36), ("C", 0.80)], POLICY)
    assert (m.outcome, m.candidates) == ("second_factor", ("A", "B"))


def test_the_runner_up_must_be_a_whole_margin_away() -> None:
    assert decide([("A", 0.30), ("B", 0.399)], POLICY).outcome == "second_factor"
    assert decide([("A", 0.30), ("B", 0.401)], POLICY).outcome == "accept"


def test_the_policy_comes_from_integer_settings_and_refuses_nonsense() -> None:
    p = FacePolicy.from_config({"threshold_milli": 500, "margin_milli": 120, "confident_milli": 450})
    assert (p.threshold, p.margin, p.confident) == (0.5, 0.12, 0.45)
    assert FacePolicy.from_config(p.to_config()) == p
    with pytest.raises(ValueError):
        FacePolicy.from_config({"threshold_milli": 400, "confident_milli": 450})


CARDS = {"A": ["C-10-0042"], "B": ["C00077", "X1234"], "C": []}


def test_the_second_factor_picks_the_candidate_whose_card_ends_in_the_digits() -> None:
    assert resolve_second_factor(["A", "B"], CARDS, "0042") == ("A", "C-10-0042")
    assert resolve_second_factor(["A", "B"], CARDS, "1234") == ("B", "X1234")


def test_the_second_factor_refuses_wrong_or_malformed_digits() -> None:
    assert resolve_second_factor(["A", "B"], CARDS, "9999") is None
    assert resolve_second_factor(["A", "B"], CARDS, "42") is None
    assert resolve_second_factor(["A", "B"], CARDS, "00a2") is None


def test_the_second_factor_never_guesses_between_two_matching_cards() -> None:
    assert resolve_second_factor(["A", "B"], {"A": ["C0042"], "B": ["D0042"]}, "0042") is None


def test_a_person_outside_the_candidates_cannot_be_chosen_by_digits() -> None:
    assert resolve_second_factor(["A"], CARDS, "0077") is None


def test_resolve_payer_follows_the_match() -> None:
    assert resolve_payer(Match("accept", "A", 0.3), CARDS, None).card_id == "C-10-0042"
    assert resolve_payer(Match("accept", "C", 0.3), CARDS, None).reason == "card_blocked"
    assert resolve_payer(Match("no_match"), CARDS, None).reason == "face_not_recognized"
    ambiguous = Match("second_factor", None, 0.3, 0.35, ("A", "B"))
    assert resolve_payer(ambiguous, CARDS, None).ask_digits
    assert resolve_payer(ambiguous, CARDS, "0077").holder_id == "B"
    assert resolve_payer(ambiguous, CARDS, "0000").reason == "second_factor_failed"


def test_the_payer_is_the_one_clearly_in_front() -> None:
    big, small = (0, 200, 200, 0), (0, 300, 60, 240)
    assert choose_payer([small, big], 80) == (1, None)
    assert choose_payer([], 80) == (-1, "face_not_found")
    assert choose_payer([small], 80) == (-1, "face_too_small")
    assert choose_payer([big, (0, 500, 180, 320)], 80) == (-1, "face_one_at_a_time")
