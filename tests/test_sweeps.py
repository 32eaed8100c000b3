"""sdedu.sweeps: guidance and step-count sweeps of a tiny random pipeline, scored by the judge."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sdedu.sweeps import guidance_sweep, plot_guidance_sweep, sampling_sweep  # noqa: E402

PROMPT = "a large red circle in the top left"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def pipe(tiny_random_pipe):
    return tiny_random_pipe


def test_guidance_sweep_scores_each_scale_on_the_same_seeds(pipe):
    prompts = ["a red shape"] * 3
    rows = guidance_sweep(pipe, prompts, [1.0, 3.0], num_inference_steps=2, batch_size=2)
    assert [r["guidance_scale"] for r in rows] == [1.0, 3.0]
    assert rows[0]["images"].shape == (3, 3, 32, 32)
    assert set(rows[0]["adherence"]) == {"color", "all", "n"} and rows[0]["adherence"]["n"] == 3
    assert sum(rows[0]["diversity"]["counts"].values()) == 3
    again = guidance_sweep(pipe, prompts, [3.0], num_inference_steps=2, batch_size=2)
    assert torch.equal(again[0]["images"], rows[1]["images"])
    fig = plot_guidance_sweep(rows)
    assert len(fig.get_axes()) == 2


def test_sampling_sweep_times_each_step_count(pipe):
    rows = sampling_sweep(pipe, [PROMPT, "a blue square"], [1, 3], sampler="ddpm")
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddpm", 1), ("ddpm", 3)]
    assert all(r["seconds"] > 0 and r["adherence"]["n"] == 2 for r in rows)
