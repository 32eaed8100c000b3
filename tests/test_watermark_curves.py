"""The watermark's two curves (sdedu.safety.watermark_curves, issue 19): strength trade-off, inversion amplification."""

import torch

from sdedu.safety.watermark_curves import (
    correlation,
    inversion_amplification,
    invert_latents,
    strength_tradeoff,
    tpr_at_fpr,
)


def test_correlation_is_per_pair_and_scale_free():
    a = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    b = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(correlation(a, 2 * a + 1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(correlation(a, -a), -torch.ones(3, dtype=torch.float64))
    assert correlation(a, b).shape == (3,) and float(correlation(a, b).abs().max()) < 0.5
    assert tpr_at_fpr(torch.tensor([98.5, 99.5, 50.0, 120.0]), torch.arange(100.0)) == 0.75


def test_inverting_latents_is_inverting_the_image_without_the_vae(tiny_random_pipe):
    pipe = tiny_random_pipe
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = pipe.invert(images, "", num_inference_steps=10, guidance_scale=1.0).cpu()
    assert torch.allclose(invert_latents(pipe, pipe.encode_images(images)), expected, atol=1e-6)


def test_amplification_moves_z0_by_the_asked_size_in_the_vae_direction(tiny_random_pipe):
    pipe, prompt = tiny_random_pipe, ["a red circle"]
    first = inversion_amplification(pipe, prompt, [0.0, 0.05], num_inference_steps=2)
    assert first["sizes"] == [0.0, 0.05] and len(first["random"]) == len(first["vae"]) == 2
    assert first["random"][0] == first["vae"][0]  # size 0: both invert z_0 itself
    assert first["vae_size"] > 0
    # one image: z_0 moved by the round trip's own size along its own direction is the round trip's z_0
    again = inversion_amplification(pipe, prompt, [first["vae_size"]], num_inference_steps=2)
    assert abs(again["vae"][0] - again["from_image"]) < 1e-4


def test_strength_tradeoff_reports_one_row_per_strength(tiny_random_pipe):
    out = strength_tradeoff(tiny_random_pipe, ["a red circle", "a blue square"], [1, 3], num_inference_steps=2)
    assert [r["strength"] for r in out["rows"]] == [1, 3]
    assert all(0 <= r["tpr"] <= 1 and 0 <= r["adherence"] <= 1 for r in out["rows"])
    assert 0 <= out["clean_adherence"] <= 1
