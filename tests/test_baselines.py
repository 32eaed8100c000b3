"""sdedu.models.baselines and sdedu.training.baselines: the GAN and the toy VAE train and sample."""

import math

import pytest
import torch

from sdedu.data.toy2d import make_gaussians
from sdedu.models.baselines import GAN, MLP, ToyVAE
from sdedu.models.vae import kl_divergence
from sdedu.training.baselines import train_gan, train_vae


def test_gan_and_vae_train_and_sample():
    points = make_gaussians(512, seed=0)
    gan, gan_losses = train_gan(
        points, steps=30, batch_size=64, hidden=32, layers=2, progress=False, generator=torch.Generator().manual_seed(0)
    )
    vae, vae_losses = train_vae(
        points,
        steps=150,
        batch_size=64,
        hidden=32,
        layers=2,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert gan.sample(7).shape == (7, 2) and vae.sample(7).shape == (7, 2)
    assert all(math.isfinite(v) for v in gan_losses)
    assert sum(vae_losses[-20:]) / 20 < sum(vae_losses[:20]) / 20  # the negative ELBO falls
    a = vae.sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(a, vae.sample(5, torch.Generator().manual_seed(1)))


def test_toy_vae_loss_is_the_negative_elbo():
    """With log_sigma = 0 the loss is mean(||x - mu(z)||^2 / 2 + KL), z drawn as the loss draws it."""
    torch.manual_seed(0)
    vae = ToyVAE(hidden=8, layers=1)
    with torch.no_grad():
        vae.log_sigma.zero_()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    mean, logvar = vae.encoder(x).chunk(2, dim=1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(2))
    expected = ((x - vae.decoder(z)).pow(2).sum(1) / 2 + kl_divergence(mean, logvar)).mean()
    torch.testing.assert_close(vae.loss(x, torch.Generator().manual_seed(2)), expected)


def test_shapes_and_bad_sizes():
    gan = GAN(data_dim=3, latent_dim=4, hidden=8, layers=1)
    assert gan.sample(6).shape == (6, 3) and gan.discriminator(torch.zeros(6, 3)).shape == (6, 1)
    assert ToyVAE(data_dim=3, hidden=8, layers=1).sample(4, with_noise=False).shape == (4, 3)
    with pytest.raises(ValueError, match="hidden must be in"):
        MLP(2, 2, hidden=0)
