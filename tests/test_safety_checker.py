"""The embedding safety checker (sdedu.safety.checker): it blocks the forbidden concept, says why; bad input."""

import pytest
import torch

from sdedu.data import shapes
from sdedu.safety.checker import SafetyChecker, _best_threshold, blocked_by_words
from sdedu.safety.evaluation import checker_error_rates
from sdedu.training.checker_recipe import vae_round_trip
from sdedu.weights import load_pretrained


@pytest.fixture(scope="module")
def bundle():
    return load_pretrained()


@pytest.fixture(scope="module")
def checker(bundle):
    return SafetyChecker.from_pretrained(["a triangle"], bundle, calibration_size=200)


def test_it_blocks_triangles_and_passes_the_rest_of_held_out_images(checker, bundle):
    images, _, attributes = shapes.sample(120, seed=7)
    images = vae_round_trip(bundle.vae, images)
    result = checker(images)
    triangle = torch.tensor([a["shape"] == "triangle" for a in attributes])
    assert (result.blocked == triangle).float().mean() >= 0.9
    rates = checker_error_rates(checker, images)  # the judge as ground truth agrees
    assert rates["miss"] <= 0.15 and rates["false_block"] <= 0.1


def test_it_says_why(checker):
    images, _, attributes = shapes.sample(40, seed=3)
    result = checker(images)
    for blocked, reasons in zip(result.blocked, result.reasons):
        assert bool(blocked) == bool(reasons)
        for concept, score in reasons:
            assert concept == "a triangle" and score > float(result.thresholds[0]) - 1e-3
    filtered = result.filtered(images)
    assert filtered[result.blocked].abs().sum() == 0 and torch.equal(filtered[~result.blocked], images[~result.blocked])
    assert "a triangle" in repr(checker)


def test_several_concepts_get_their_own_thresholds(bundle):
    checker = SafetyChecker.from_pretrained(["a triangle", "a red shape"], bundle, calibration_size=100)
    assert checker.thresholds.shape == (2,) and checker.concept_embeddings.shape == (2, 64)
    red = shapes.render([{"shape": "circle", "color": "red", "size": "large", "position": "center"}])
    assert checker(red).reasons[0][0][0] == "a red shape"


def test_a_word_blocklist_misses_what_the_prompt_does_not_say():
    assert blocked_by_words(["a triangle", "a shape", "A large Triangle"], ["triangle"]) == [True, False, True]


def test_best_threshold_separates_separable_scores():
    scores = torch.tensor([0.9, 0.8, 0.3, 0.2, 0.1])
    cut = _best_threshold(scores, torch.tensor([True, True, False, False, False]))
    assert 0.3 < float(cut) < 0.8


@pytest.mark.parametrize(
    "concepts, match",
    [([], "non-empty"), ("", "names no"), (["a shape"], "names no"), (["three corners"], "outside the vocabulary")],
)
def test_bad_concepts_are_named(bundle, concepts, match):
    with pytest.raises(ValueError, match=match) as error:
        SafetyChecker.from_pretrained(concepts, bundle, calibration_size=20)
    assert "concepts" in str(error.value)


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(2, 3, 64, 64), r"\(B, 3, 32, 32\)"),
        (torch.zeros(2, 1, 32, 32), r"\(B, 3, 32, 32\)"),
        (torch.full((2, 3, 32, 32), -0.5), r"\[0, 1\].*\(images \+ 1\) / 2"),
        (torch.full((2, 3, 32, 32), 255.0), r"\[0, 1\]"),
    ],
)
def test_bad_images_are_named(checker, images, match):
    with pytest.raises(ValueError, match=match):
        checker(images)
