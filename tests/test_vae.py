"""sdedu.models.vae: shapes, the KL term, the scale factor, bad input (PSNR itself: test_metrics)."""

import math

import pytest
import torch

from sdedu.data import shapes
from sdedu.models.vae import VAE, VAEConfig, kl_divergence


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4))


def test_encode_decode_shapes(vae):
    images, _, _ = shapes.sample(3, seed=0)
    mean, logvar = vae.encode(images)
    assert mean.shape == logvar.shape == (3, 4, 8, 8)
    assert vae.decode(mean).shape == (3, 3, 32, 32)
    recon, m, lv = vae(images, generator=torch.Generator().manual_seed(0))
    assert recon.shape == (3, 3, 32, 32) and m.shape == (3, 4, 8, 8)


def test_kl_closed_form():
    zero = torch.zeros(2, 4, 8, 8)
    torch.testing.assert_close(kl_divergence(zero, zero), torch.zeros(2))  # N(0, I) vs N(0, I)
    # KL(N(1, e^0) || N(0, 1)) = 0.5 * sum(1) over 256 elements = 128
    torch.testing.assert_close(kl_divergence(zero + 1, zero), torch.full((2,), 128.0))


def test_reparameterisation_is_seeded_and_uses_the_variance():
    mean, logvar = torch.zeros(1000, 4, 8, 8), torch.full((1000, 4, 8, 8), math.log(4.0))
    a = VAE.sample_latent(mean, logvar, torch.Generator().manual_seed(1))
    b = VAE.sample_latent(mean, logvar, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.std().item() == pytest.approx(2.0, rel=0.02)


def test_scale_factor_gives_unit_variance(vae):
    images, _, _ = shapes.sample(64, seed=1)
    scale = vae.compute_scale_factor(images, generator=torch.Generator().manual_seed(0))
    assert float(vae.scale_factor) == scale
    mean, logvar = vae.encode(images)
    z = VAE.sample_latent(mean, logvar, torch.Generator().manual_seed(0)) * scale
    assert z.std().item() == pytest.approx(1.0, rel=1e-4)
    assert "scale_factor" in vae.state_dict()  # saved with the weights


def test_loss_backpropagates(vae):
    images, _, _ = shapes.sample(4, seed=2)
    loss = vae.loss(images, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0
    vae.zero_grad()


def test_bad_input(vae):
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 32, 32\)"):
        vae.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="floating"):
        vae.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, 8, 8\)"):
        vae.decode(torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="channels must give 3 levels"):
        VAEConfig(channels=(8, 8))


def test_reconstruction_loss_options(vae):
    images, _, _ = shapes.sample(2, seed=3)
    l1 = VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4, reconstruction="l1"))
    l1.load_state_dict(vae.state_dict())
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert not torch.allclose(l1.loss(images, g()), vae.loss(images, g()))
    with pytest.raises(ValueError, match="reconstruction must be 'l1' or 'mse'"):
        VAEConfig(reconstruction="lpips")
