"""The shipped model works: it loads offline, follows prompts, keeps variety, is reproducible.

A broken or missing model must not land: nothing here is skipped when the weights are absent.
Fast on purpose (48 images, 10 DDIM steps); the full figures come from `python -m sdedu.bench`.
"""

import json
from pathlib import Path

import pytest
import torch

from sdedu import cli, metrics
from sdedu.data import shapes
from sdedu.pipeline import TinyStableDiffusion

WEIGHTS = Path(__file__).resolve().parents[1] / "sdedu" / "weights"

# Floors, far enough below the shipped model's measured figures (in the closing note of issue 3)
# that sampling noise never trips them, high enough that a broken model cannot pass.
FLOORS = {"color": 0.9, "shape": 0.85, "position": 0.9, "size": 0.9}


@pytest.fixture(scope="module")
def pipe():
    return TinyStableDiffusion.from_pretrained()


def test_manifest_and_files_are_shipped():
    manifest_path = WEIGHTS / "manifest.json"
    assert manifest_path.is_file(), f"{manifest_path} is missing: the shipped weights must be committed"
    manifest = json.loads(manifest_path.read_text())
    total = 0
    for name in ("text_encoder", "vae", "unet"):
        entry = manifest["components"][name]
        path = WEIGHTS / entry["file"]
        assert path.is_file() and path.suffix == ".safetensors"
        total += path.stat().st_size
    assert total <= 15 * 2**20, f"shipped weights are {total / 2**20:.1f} MB; the budget is 15 MB"


def test_full_prompts_are_followed(pipe):
    attributes = shapes.sample_attributes(48, torch.Generator().manual_seed(123), exclude_held_out=True)
    prompts = [shapes.caption(a) for a in attributes]
    images = pipe(prompts, num_inference_steps=10, seed=0)
    scores = metrics.adherence(images, attributes)
    for name, floor in FLOORS.items():
        assert scores[name] >= floor, f"{name} adherence {scores[name]:.2f} < {floor} (all scores: {scores})"


def test_partial_prompt_keeps_variety(pipe):
    verdicts = metrics.judge(pipe("a red shape", num_images_per_prompt=30, num_inference_steps=10, seed=1))
    split = metrics.diversity(verdicts, "shape")
    assert max(split["fractions"][s] for s in shapes.SHAPES) <= 0.8, split["counts"]
    assert metrics.adherence(verdicts, ["a red shape"] * 30)["color"] >= 0.8


def test_same_seed_bit_identical(pipe):
    a = pipe(["a small blue square in the center", "a shape"], num_inference_steps=5, seed=7)
    b = pipe(["a small blue square in the center", "a shape"], num_inference_steps=5, seed=7)
    assert torch.equal(a, b)


def test_editing_modes_run_on_the_real_model(pipe):
    images, _, _ = shapes.sample(2, seed=3)
    edited = pipe.img2img(images, "a large green square in the center", strength=0.6, num_inference_steps=10)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    painted = pipe.inpaint(images, mask, "a small yellow circle in the center", num_inference_steps=10)
    assert edited.shape == painted.shape == (2, 3, 32, 32)
    assert torch.equal(painted * (1 - mask), images * (1 - mask))


def test_unknown_words_are_named(pipe):
    with pytest.raises(ValueError, match="purple"):
        pipe("a purple circle", num_inference_steps=1)


def test_cli_generate_with_the_shipped_model(tmp_path):
    out = tmp_path / "grid.png"
    assert cli.main(["generate", "a large red circle in the top left", "-n", "4", "--steps", "5", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
