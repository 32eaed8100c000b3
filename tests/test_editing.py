"""Editing (restoration): the noise-level -> timestep map, denoising with an oracle model, the A / A^+
algebra of super-resolution, and super_resolve on a small random pipeline.

The pixel denoiser's model, crops and training loop are tested in tests/test_pixel_denoiser.py."""

import pytest
import torch

from sdedu import editing
from sdedu.metrics import psnr
from sdedu.schedules import NoiseSchedule

SCHEDULE = NoiseSchedule.linear()


def test_timestep_for_noise_level_matches_snr():
    for t in (0, 10, 57, 300, 999):
        alpha_bar = SCHEDULE.alpha_bar[t]
        sigma = float(((1 - alpha_bar) / alpha_bar).sqrt())
        assert editing.timestep_for_noise_level(SCHEDULE, sigma) == t
    levels = [editing.timestep_for_noise_level(SCHEDULE, s) for s in (0.05, 0.1, 0.2, 0.4, 1.0)]
    assert levels == sorted(levels) and len(set(levels)) == 5  # more noise, later in the chain


def test_timestep_for_noise_level_picks_among_candidates_and_rejects_bad_sigma():
    candidates = torch.tensor([901, 501, 101, 1])
    assert editing.timestep_for_noise_level(SCHEDULE, 0.2, candidates) == 101
    with pytest.raises(ValueError, match="sigma"):
        editing.timestep_for_noise_level(SCHEDULE, 0.0)
    with pytest.raises(TypeError, match="schedule"):
        editing.timestep_for_noise_level("linear", 0.1)


def test_a_scaled_noisy_image_is_exactly_q_sample():
    """sqrt(alpha_bar_t) (x + sigma n) == q_sample(x, t, n) when sigma^2 = (1 - alpha_bar_t) / alpha_bar_t."""
    from sdedu.diffusion import q_sample

    g = torch.Generator().manual_seed(0)
    x, n = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.randn(2, 3, 8, 8, generator=g)
    t = 80
    alpha_bar = SCHEDULE.alpha_bar[t]
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    torch.testing.assert_close(alpha_bar.sqrt() * (x + sigma * n), q_sample(x, t, SCHEDULE, noise=n))


class Oracle(torch.nn.Module):
    """The perfect eps-predictor for a data set holding one image: eps = (x_t - sqrt(ab) x*) / sqrt(1 - ab)."""

    def __init__(self, clean):
        super().__init__()
        self.clean = clean

    def forward(self, x_t, t):
        alpha_bar = SCHEDULE.alpha_bar[t].view(-1, 1, 1, 1)
        return (x_t - alpha_bar.sqrt() * self.clean) / (1 - alpha_bar).sqrt()


@pytest.mark.parametrize("method", editing.DENOISE_METHODS)
def test_denoise_with_an_oracle_recovers_the_image(method):
    """Photos in [0, 1] at the surface; the model works on [-1, 1], where the noise std doubles."""
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(1, 3, 16, 16, generator=g) * 0.8 + 0.1  # in [0, 1]
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    oracle = Oracle(2 * clean - 1)
    out, t_start = editing.denoise(oracle, noisy, 0.1, SCHEDULE, method=method, generator=g, return_start=True)
    assert 40 <= t_start <= 80  # SNR 1 / 0.2^2 = 25 sits near t = 58 in the linear schedule
    torch.testing.assert_close(out, clean, atol=1e-3, rtol=0)
    assert psnr(out, clean) > psnr(noisy.clamp(0, 1), clean) + 20


def test_denoise_rejects_an_unknown_method_and_bad_sigma():
    with pytest.raises(ValueError, match="method must be one of"):
        editing.denoise(Oracle(torch.zeros(1, 3, 4, 4)), torch.zeros(1, 3, 4, 4), 0.1, SCHEDULE, method="best")
    with pytest.raises(ValueError, match="sigma must be a finite number"):
        editing.denoise(Oracle(torch.zeros(1, 3, 4, 4)), torch.zeros(1, 3, 4, 4), float("nan"), SCHEDULE)


def test_downsample_upsample_and_projection_algebra():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=g)
    y = torch.rand(2, 3, 16, 16, generator=g)
    # A A^+ = I
    torch.testing.assert_close(editing.downsample(editing.upsample_nearest(y)), y)
    # the projection satisfies A x_hat = y and keeps x's null-space part (x - A^+ A x)
    x_hat = editing.project_to_observation(x, y)
    torch.testing.assert_close(editing.downsample(x_hat), y)
    null = lambda v: v - editing.upsample_nearest(editing.downsample(v))  # noqa: E731
    torch.testing.assert_close(null(x_hat), null(x))


@pytest.fixture(scope="module")
def pipe():
    from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer
    from sdedu.models.unet import UNet, UNetConfig
    from sdedu.models.vae import VAE, VAEConfig
    from sdedu.pipeline import TinyStableDiffusion

    torch.manual_seed(0)
    text_encoder = TextEncoder(TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32))
    unet = UNet(UNetConfig(channels=(32, 32), context_dim=32, head_dim=16, norm_groups=8))
    vae = VAE(VAEConfig(channels=(8, 16, 16)))
    return TinyStableDiffusion(Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear())


def test_super_resolve_shape_seed_and_consistency(pipe):
    g = torch.Generator().manual_seed(3)
    low = torch.rand(2, 3, 16, 16, generator=g) * 0.5 + 0.25  # away from 0 and 1: the final clamp is inactive
    out = editing.super_resolve(pipe, low, strength=0.5, num_inference_steps=4, seed=1)
    again = editing.super_resolve(pipe, low, strength=0.5, num_inference_steps=4, seed=1)
    plain = editing.super_resolve(pipe, low, strength=0.5, num_inference_steps=4, seed=1, consistency=False)
    assert out.shape == (2, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, again)
    consistent_error = (editing.downsample(out) - low).abs().max()
    plain_error = (editing.downsample(plain) - low).abs().max()
    # Exact up to the final clamp to [0, 1] (a random VAE decodes extreme pixels); without the projection
    # a random VAE cannot reproduce the input at all.
    assert consistent_error < 0.1 < 0.5 < plain_error


def test_super_resolve_runs_the_unet_once_per_step_at_guidance_one(pipe):
    calls = []
    unet = pipe.unet
    pipe.unet = lambda z, t, cond: calls.append(z.shape[0]) or unet(z, t, cond)
    try:
        editing.super_resolve(pipe, torch.full((2, 3, 16, 16), 0.5), strength=0.5, num_inference_steps=4)
    finally:
        pipe.unet = unet
    assert calls == [2, 2]  # 2 of the 4 steps, the conditional branch only


def test_super_resolve_rejects_bad_input(pipe):
    with pytest.raises(ValueError, match=r"low_res must have shape \(B, 3, 16, 16\)"):
        editing.super_resolve(pipe, torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"low_res must have values in \[0, 1\]"):
        editing.super_resolve(pipe, torch.rand(1, 3, 16, 16) * 2)
    with pytest.raises(ValueError, match="strength"):
        editing.super_resolve(pipe, torch.rand(1, 3, 16, 16), strength=0.0)
    with pytest.raises(ValueError, match="one per image"):
        editing.super_resolve(pipe, torch.rand(2, 3, 16, 16), prompt=["a", "b", "c"])
