"""Bad input at every entry of the pipeline: a ValueError/TypeError naming the argument, never a NaN image.

Also the inputs that are fine but unusual: float64/float16 images and latents are converted.
"""

import re

import numpy as np
import pytest
import torch

from sdedu._checks import check_number_range
from sdedu.data import shapes
from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer
from sdedu.models.unet import UNet, UNetConfig
from sdedu.models.vae import VAE, VAEConfig
from sdedu.pipeline import SAMPLERS, TinyStableDiffusion
from sdedu.schedules import NoiseSchedule

PROMPT = "a red circle"


def parts():
    torch.manual_seed(0)
    text_encoder = TextEncoder(TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32))
    unet = UNet(UNetConfig(channels=(32, 32), context_dim=32, head_dim=16, norm_groups=8))
    vae = VAE(VAEConfig(channels=(8, 16, 16)))
    return Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear()


@pytest.fixture(scope="module")
def pipe():
    return TinyStableDiffusion(*parts())


@pytest.fixture(scope="module")
def images():
    return shapes.sample(2, seed=0)[0]


def with_nan(x):
    x = x.clone()
    x.view(-1)[5] = float("nan")
    return x


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
        ({"eta": 2.0}, r"eta must be in \[0.0, 1.0\]; got 2.0"),
        ({"eta": float("nan")}, "eta must be a finite number"),
        ({"eta": 0.5, "sampler": "ddpm"}, "eta is used only by the samplers"),
        ({"sampler": "plms"}, re.escape(f"sampler must be one of {SAMPLERS}; got str 'plms'")),
        ({"seed": -1}, "seed must be in"),
        ({"num_inference_steps": 1001}, "num_inference_steps must be in"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
    ],
)
def test_text_to_image_settings(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(PROMPT, num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"seed": 1.5}, TypeError, "seed must be an int"), ({"prompt": []}, TypeError, "non-empty list")],
)
def test_text_to_image_types(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe(**{"prompt": PROMPT, "num_inference_steps": 2, **kwargs})


def test_non_finite_images_masks_and_latents_are_refused(pipe, images):
    mask = torch.zeros(1, 32, 32)
    with pytest.raises(ValueError, match=r"image must be finite.*1 inf/NaN"):
        pipe.img2img(with_nan(images), PROMPT, num_inference_steps=2)
    with pytest.raises(ValueError, match="mask must be finite"):
        pipe.inpaint(images, with_nan(mask), PROMPT, num_inference_steps=2)
    with pytest.raises(ValueError, match="strength must be a finite number"):
        pipe.img2img(images, PROMPT, strength=float("nan"))
    with pytest.raises(ValueError, match="z must be finite"):
        pipe.decode_latents(with_nan(torch.zeros(1, 4, 8, 8)))
    with pytest.raises(ValueError, match="images must be finite"):
        pipe.encode_images(with_nan(images))


def test_numpy_is_refused_by_name(pipe, images):
    for call in (
        lambda: pipe.encode_images(images.numpy()),
        lambda: pipe.decode_latents(np.zeros((1, 4, 8, 8), dtype=np.float32)),
        lambda: pipe.img2img(images.numpy(), PROMPT),
        lambda: pipe.inpaint(images, np.zeros((32, 32)), PROMPT),
    ):
        with pytest.raises(TypeError, match=r"must be a torch.Tensor; got a numpy array of shape .*torch.from_numpy"):
            call()


def test_empty_batches_and_wrong_shapes(pipe, images):
    with pytest.raises(ValueError, match=r"image must hold at least one image \(B >= 1\)"):
        pipe.img2img(images[:0], PROMPT)
    with pytest.raises(ValueError, match="z must hold at least one latent"):
        pipe.decode_latents(torch.zeros(0, 4, 8, 8))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, 8, 8\) or \(4, 8, 8\)"):
        pipe.decode_latents(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 32, 32\)"):
        pipe.encode_images(torch.zeros(1, 3, 64, 64))


def test_other_float_dtypes_are_converted(pipe, images):
    z = pipe.encode_images(images)
    torch.testing.assert_close(pipe.encode_images(images.double()), z)
    torch.testing.assert_close(pipe.encode_images(images.half()), z, atol=1e-2, rtol=0)
    torch.testing.assert_close(pipe.decode_latents(z.double()), pipe.decode_latents(z))
    a = pipe.img2img(images, PROMPT, num_inference_steps=2)
    torch.testing.assert_close(pipe.img2img(images.double(), PROMPT, num_inference_steps=2), a)
    assert pipe.decode_latents(z[0]).shape == (1, 3, 32, 32)  # one latent without a batch dimension


def test_device_strings_are_checked(pipe):
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu' or 'cuda:0'; got str 'gpu'"):
        TinyStableDiffusion(*parts(), device="gpu")
    with pytest.raises(ValueError, match="device must be a torch device"):
        pipe.to("gpu")
    with pytest.raises(ValueError, match="device must be a torch device"):
        TinyStableDiffusion.from_pretrained(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pipe.to("cuda")
    assert pipe.device == torch.device("cpu")


def test_check_number_range_refuses_inf_and_nan():
    assert check_number_range("x", 1e300, 0.0) == 1e300
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match="x must be a finite number"):
            check_number_range("x", bad, float("-inf"))
