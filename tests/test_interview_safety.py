"""Interview question 7's safety, provenance and privacy items (solutions/11): right answers pass, wrong ones
get a hint, and the keys of the two predict-then-measure items are what the shipped models measure, with the
notebook's own inputs and seeds (as tests/test_interview_predictions.py does for Q2 and Q5)."""

import numpy as np
import pytest
from exercise_catalogue import assert_passes, assert_rejected, mutants, right_answers, wrong_answers
from PIL import Image

from sdedu import TinyStableDiffusion
from sdedu.grading import check
from sdedu.safety.memorisation import extraction_attack, memorising_pipeline
from sdedu.training.memorisation_recipe import memorising_recipe
from sdedu.training.recipe_config import Recipe
from sdedu.viz.png import to_uint8, write_png
from sdedu.viz.provenance import generation_provenance, read_provenance

RIGHT = [
    ("interview_memorisation", {"a", "d"}),
    ("interview_provenance", "a, c, E"),
    ("interview_safeguards", ["a", "c"]),
]
WRONG = {
    "interview_memorisation": {
        "closeness is proof": ("acd", "control"),
        "the shipped model copies too": ("abd", "75 images"),
        "data size does not matter": ("a", "number of distinct"),
    },
    "interview_provenance": {
        "a re-save keeps the text": ("abce", "copies only the pixels"),
        "no label, not generated": ("acde", "absence"),
        "fields cannot be changed": ("ae", "not signed"),
    },
    "interview_safeguards": {
        "the watermark is robust": ("abc", "48-bit"),
        "a word blocklist works": ("acd", "paraphrase"),
        "erasure is permanent": ("ace", "fine-tune"),
        "the checker cannot be turned off": ("c", "safety_checker=None"),
        "not a choice": ("az", "not among"),
    },
}


@right_answers(RIGHT)
def test_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(mutants(WRONG))
def test_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)


@pytest.fixture(scope="module")
def pipe():
    return TinyStableDiffusion.from_pretrained()


def test_memorisation_key_is_what_the_two_models_measure(pipe, capsys):
    closer = {}
    for name, model, recipe in (("a", memorising_pipeline(), memorising_recipe()), ("b", pipe, Recipe())):
        result = extraction_attack(model, recipe, prompts_from=12, per_caption=1, steps=10)
        closer[name] = bool(result["attack"].distance.median() < result["control"].distance.median())
    assert closer == {"a": True, "b": False}, closer
    check("interview_memorisation", {letter for letter, yes in closer.items() if yes} | {"d"})
    assert "passed" in capsys.readouterr().out


def test_provenance_key_is_what_the_file_does(pipe, tmp_path, capsys):
    prompt, seed = "a large green square in the top left", 3
    pixels = to_uint8(pipe(prompt, seed=seed))[0].permute(1, 2, 0).numpy()
    written = generation_provenance(pipe, prompt, seed, "ddim", 25, 2.0)
    write_png(pixels, tmp_path / "generated.png", written)
    back = read_provenance(tmp_path / "generated.png")
    with Image.open(tmp_path / "generated.png") as png:
        png.save(tmp_path / "resaved.png")
    write_png(pixels, tmp_path / "forged.png", {**written, "prompt": "a photograph"})
    again = pipe(
        back["prompt"],
        seed=back["seed"],
        num_inference_steps=back["steps"],
        guidance_scale=back["guidance_scale"],
        sampler=back["sampler"],
        eta=back["eta"],
    )
    holds = {
        "a": back == written,
        "b": read_provenance(tmp_path / "resaved.png") == written,
        "c": read_provenance(tmp_path / "forged.png")["prompt"] == "a photograph",
        "e": np.array_equal(to_uint8(again)[0].permute(1, 2, 0).numpy(), pixels),
    }
    assert holds == {"a": True, "b": False, "c": True, "e": True}, holds
    check("interview_provenance", {letter for letter, yes in holds.items() if yes})
    assert "passed" in capsys.readouterr().out
