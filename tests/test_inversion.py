"""DDIM inversion (issue 16.4): `pipe.invert` runs the one loop from an image to its noise z_T, and
`pipe(prompt, latents=z_T)` regenerates the image from it.

Measured on the shipped model (4 of its own images at the default guidance, inverted and
regenerated at guidance 1): mean PSNR 38.8 dB at 10 steps, 41.5 dB at 25, 43.9 dB at 50.
"""

import pytest
import torch

from sdedu.diffusion import randn
from sdedu.metrics import psnr
from sdedu.pipeline import TinyStableDiffusion, image_generators

PROMPTS = ["a red circle", "a small blue square in the left", "a large green triangle", "a yellow circle in the top"]
#: Floor for the mean PSNR at 50 steps, below the measured 43.9 dB and above the issue's aim of 30 dB.
PSNR_FLOOR_50 = 38.0


@pytest.fixture(scope="module")
def pipe():
    return TinyStableDiffusion.from_pretrained()


@pytest.fixture(scope="module")
def images(pipe):
    return pipe(PROMPTS[:2], num_inference_steps=10, seed=0)


def test_invert_returns_one_latent_per_image(pipe, images):
    z_T = pipe.invert(images, PROMPTS[:2], num_inference_steps=5)
    assert z_T.shape == (2, *pipe.latent_shape)
    assert torch.isfinite(z_T).all()
    # One image for every prompt, and a single (3, 32, 32) image.
    assert pipe.invert(images[0], PROMPTS[:2], num_inference_steps=5).shape == (2, *pipe.latent_shape)
    assert pipe.invert(images[0], PROMPTS[0], num_inference_steps=5).shape == (1, *pipe.latent_shape)


def test_latents_start_the_pipeline_where_the_seed_would(pipe):
    """`latents=` the seed's own noise gives the seed's images: the argument replaces z_T and nothing else."""
    z = randn((2, *pipe.latent_shape), image_generators(3, 2), pipe.device)
    torch.testing.assert_close(pipe(PROMPTS[:2], 5, latents=z), pipe(PROMPTS[:2], 5, seed=3), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"latents": torch.zeros(2, 4, 4, 4)}, ValueError, "latents must have shape"),
        ({"latents": torch.zeros(3, 4, 8, 8)}, ValueError, "latents must hold one latent per image"),
        ({"latents": torch.full((2, 4, 8, 8), float("nan"))}, ValueError, "latents must be finite"),
        ({"latents": torch.zeros(2, 4, 8, 8, dtype=torch.int64)}, ValueError, "latents must be a floating-point"),
        ({"latents": [[0.0]]}, TypeError, "latents must be a torch.Tensor"),
    ],
)
def test_bad_latents_are_refused_by_name(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe(PROMPTS[:2], 2, **kwargs)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((torch.zeros(2, 3, 16, 16),), {}, ValueError, "images must have shape"),
        ((torch.full((2, 3, 32, 32), 2.0),), {}, ValueError, r"images must have values in \[0, 1\]"),
        (("not an image",), {}, TypeError, "images must be a torch.Tensor"),
        ((torch.zeros(2, 3, 32, 32),), {"num_inference_steps": 0}, ValueError, "num_inference_steps"),
        ((torch.zeros(2, 3, 32, 32),), {"num_inference_steps": 1000}, ValueError, "n \\(the number of sampling steps"),
        ((torch.zeros(2, 3, 32, 32),), {"guidance_scale": -1.0}, ValueError, "guidance_scale"),
    ],
)
def test_bad_inversion_input_is_refused_by_name(pipe, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe.invert(*args, PROMPTS[:2], **kwargs)


def test_inversion_reconstructs_the_shipped_models_own_images(pipe):
    """Issue 16's target: regenerating from the inverted noise at 50 steps gives the image back (>= 30 dB)."""
    images = pipe(PROMPTS, num_inference_steps=50, seed=0)
    z_T = pipe.invert(images, PROMPTS, num_inference_steps=50)
    again = pipe(PROMPTS, num_inference_steps=50, guidance_scale=1.0, latents=z_T)
    assert float(psnr(again, images).mean()) >= PSNR_FLOOR_50
    # Not a trivial identity: plain noise of the same seed gives other images.
    assert float(psnr(pipe(PROMPTS, 50, guidance_scale=1.0, seed=1), images).mean()) < PSNR_FLOOR_50 - 15
