"""Shared test setup: one thread per worker, a headless matplotlib, deterministic seeds."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """Every test starts from the same global RNG state: what it draws never depends on the tests run before it."""
    torch.manual_seed(0)


@pytest.fixture
def generator():
    """A seeded CPU generator, so that every test draws the same numbers every run."""
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="module")
def tiny_random_pipe():
    """A TinyStableDiffusion with tiny random networks (one per test module): fast, for shapes and plumbing."""
    from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer
    from sdedu.models.unet import UNet, UNetConfig
    from sdedu.models.vae import VAE, VAEConfig
    from sdedu.pipeline import TinyStableDiffusion
    from sdedu.schedules import NoiseSchedule

    torch.manual_seed(0)
    text_encoder = TextEncoder(TextEncoderConfig(width=16, layers=1, num_heads=2, embed_dim=16))
    unet = UNet(UNetConfig(channels=(16, 32), context_dim=16, head_dim=8, norm_groups=8))
    vae = VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4))
    return TinyStableDiffusion(Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear())
