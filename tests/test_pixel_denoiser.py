"""The pixel-space denoiser: the model at any size, random crops, and its training loop."""

import pytest
import torch

from sdedu.data.crops import random_crops
from sdedu.models.pixel_denoiser import PixelDenoiser, PixelDenoiserConfig
from sdedu.schedules import NoiseSchedule
from sdedu.training.pixel_denoiser import train_pixel_denoiser

SMALL = PixelDenoiserConfig(channels=8, num_blocks=1, norm_groups=4)


def test_pixel_denoiser_works_at_any_size_and_checks_input():
    model = PixelDenoiser(SMALL)
    for size in (8, 13, 32):
        assert model(torch.randn(2, 3, size, size), torch.tensor([0, 999])).shape == (2, 3, size, size)
    with pytest.raises(ValueError, match="x_t must have shape"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="norm_groups"):
        PixelDenoiserConfig(channels=10, norm_groups=4)


def test_random_crops_come_from_the_images():
    image = torch.arange(3 * 20 * 20, dtype=torch.float32).reshape(3, 20, 20)
    crops = random_crops([image, image[:, :12, :12]], 6, 8, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 8, 8)
    values = set(image.flatten().tolist())
    assert all(v in values for v in crops.flatten().tolist())
    with pytest.raises(ValueError, match="at least 8x8"):
        random_crops([torch.zeros(3, 4, 4)], 2, 8)


def test_train_pixel_denoiser_lowers_the_loss_and_is_seeded():
    images = [torch.linspace(0, 1, 24).view(1, 24).expand(3, 24, 24).contiguous()]  # a smooth ramp in [0, 1]
    kwargs = dict(steps=80, batch_size=16, crop=8, lr=5e-3, max_timestep=200, config=SMALL, progress=False)
    torch.manual_seed(0)
    model, losses = train_pixel_denoiser(
        images, NoiseSchedule.linear(), generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert not model.training and len(losses) == 80
    assert sum(losses[-15:]) / 15 < 0.8 * sum(losses[:15]) / 15
    with pytest.raises(ValueError, match="max_timestep"):
        train_pixel_denoiser(images, NoiseSchedule.linear(), **{**kwargs, "max_timestep": 2000})
