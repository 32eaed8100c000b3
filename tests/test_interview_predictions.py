"""The interview's predict-then-run items (solutions/11, Q2 and Q5): the answer key of each check is what
the shipped model measures, with the notebook's own inputs and seeds.

Each test measures, turns the measurement into the letters it supports, and hands those to the check:
if the shipped weights or the key change so that they disagree, the test fails.
"""

import pytest
import torch
import torch.nn.functional as F

from sdedu import TinyStableDiffusion, metrics
from sdedu.data import shapes
from sdedu.diffusion import q_sample
from sdedu.grading import check
from sdedu.schedules import NoiseSchedule
from sdedu.sweeps import guidance_sweep


@pytest.fixture(scope="module")
def pipe():
    return TinyStableDiffusion.from_pretrained()


def test_q2_the_parts_with_trained_parameters_are_the_key(pipe, capsys):
    parts = {"a": pipe.vae, "b": pipe.text_encoder, "c": pipe.unet, "d": pipe.schedule, "e": pipe.make_sampler("ddim")}
    trained = {
        letter
        for letter, part in parts.items()
        if isinstance(part, torch.nn.Module) and sum(p.numel() for p in part.parameters()) > 0
    }
    assert torch.equal(pipe.schedule.betas, NoiseSchedule.scaled_linear(pipe.schedule.T).betas)
    check("interview_architecture", trained)
    assert "passed" in capsys.readouterr().out


def test_q5_the_eps_mse_is_largest_at_the_smallest_timestep(pipe, capsys):
    x, captions, _ = shapes.sample(64, seed=1)
    z0, cond = pipe.encode_images(x), pipe.encode_prompt(captions)[0]
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
    levels = {"a": 1, "b": 250, "c": 500, "d": 999}
    with torch.no_grad():
        mse = {
            letter: F.mse_loss(pipe.unet(q_sample(z0, t, pipe.schedule, noise=eps), torch.full((64,), t), cond), eps)
            for letter, t in levels.items()
        }
    assert list(mse) == sorted(mse, key=mse.get, reverse=True), f"the eps-MSE does not fall as t grows: {mse}"
    check("interview_training_inference", max(mse, key=mse.get))
    assert "passed" in capsys.readouterr().out


def test_q5_guidance_narrows_what_the_prompt_leaves_open(pipe, capsys):
    rows = guidance_sweep(pipe, ["a red shape"] * 24, scales=[1.0, 7.0], seed=2)
    spread, red = [], []
    for row in rows:
        verdicts = metrics.judge(row["images"])
        spread.append(sum(metrics.diversity(verdicts, name)["normalized_entropy"] for name in ("shape", "size")) / 2)
        red.append(row["adherence"]["color"])
    assert spread[0] > spread[1] and min(red) >= 0.9, f"spread of shape and size {spread}, red {red}"
    check("interview_guidance_diversity", "b")
    assert "passed" in capsys.readouterr().out
