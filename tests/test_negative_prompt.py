"""Negative prompts: `pipe(prompts, negative_prompt=...)` replaces "" in the unconditional branch (as diffusers)."""

import pytest
import torch

from sdedu.diffusion import randn
from sdedu.pipeline import TinyStableDiffusion
from sdedu.pipeline.loop import denoise, image_generators
from sdedu.pipeline.sd3 import TinyStableDiffusion3

PROMPTS = ["a large shape in the center", "a small blue shape"]
STEPS = 3  # plumbing: a few steps are enough to compare two ways of running the same loop


@pytest.fixture(scope="module")
def pipe():
    return TinyStableDiffusion.from_pretrained()


def embed(pipe, captions):
    return pipe.text_encoder(pipe.tokenizer(captions, device=pipe.device))  # (B, L, D)


@torch.no_grad()
def test_uncond_is_the_encoding_of_the_negative_prompts(pipe):
    cond, uncond = pipe.encode_prompt(PROMPTS, negative_prompt=["red", "green square"])
    torch.testing.assert_close(cond, embed(pipe, PROMPTS), rtol=0, atol=1e-6)
    torch.testing.assert_close(uncond, embed(pipe, ["red", "green square"]), rtol=0, atol=1e-6)
    # One str applies to every prompt; None is the empty caption, as before.
    torch.testing.assert_close(pipe.encode_prompt(PROMPTS, "red")[1], embed(pipe, ["red", "red"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(pipe.encode_prompt(PROMPTS)[1], embed(pipe, ["", ""]), rtol=0, atol=1e-6)


@torch.no_grad()
def test_generation_equals_the_loop_with_a_hand_made_uncond(pipe):
    images = pipe(PROMPTS, num_inference_steps=STEPS, seed=3, negative_prompt="red")
    # The same, by hand: the one loop with uncond = the encoding of "red".
    sampler = pipe._sampler("ddim", 0.0, STEPS)
    generators = image_generators(3, len(PROMPTS))
    z = randn((len(PROMPTS), *pipe.latent_shape), generators, pipe.device)
    z = denoise(pipe.unet, sampler, z, embed(pipe, PROMPTS), embed(pipe, ["red", "red"]), 2.0, generator=generators)
    torch.testing.assert_close(images, pipe.decode_latents(z), rtol=0, atol=1e-5)
    # ... and it is not the image without a negative prompt.
    assert (images - pipe(PROMPTS, num_inference_steps=STEPS, seed=3)).abs().max() > 1e-2
    # None and "" are the same thing.
    torch.testing.assert_close(
        pipe(PROMPTS, num_inference_steps=STEPS, seed=3, negative_prompt=""),
        pipe(PROMPTS, num_inference_steps=STEPS, seed=3),
        rtol=0,
        atol=1e-6,
    )


@torch.no_grad()
def test_per_image_seeds_and_images_per_prompt_are_kept(pipe):
    batch = pipe(PROMPTS, num_inference_steps=STEPS, seed=5, negative_prompt=["red", "green"], num_images_per_prompt=2)
    # Prompt-major: image 3 is the second prompt's second image, seed 5 + 3, with the second negative prompt.
    alone = pipe(PROMPTS[1], num_inference_steps=STEPS, seed=8, negative_prompt="green")
    torch.testing.assert_close(batch[3:4], alone, rtol=0, atol=1e-5)


@torch.no_grad()
def test_editing_modes_take_negative_prompts(pipe):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1.0
    for mode, args in (("img2img", (images,)), ("inpaint", (images, mask))):
        edit = getattr(pipe, mode)
        # One prompt for two images: its negative prompt (a list of one) goes with it to both.
        with_negative = edit(*args, PROMPTS[0], num_inference_steps=STEPS, negative_prompt=["red"])
        torch.testing.assert_close(
            with_negative, edit(*args, [PROMPTS[0]] * 2, num_inference_steps=STEPS, negative_prompt="red")
        )
        assert (with_negative - edit(*args, PROMPTS[0], num_inference_steps=STEPS)).abs().max() > 1e-3


@torch.no_grad()
def test_sd3_takes_negative_prompts():
    sd3 = TinyStableDiffusion3.from_pretrained()
    packed, packed_uncond = sd3.encode_prompt(PROMPTS, negative_prompt="red")
    torch.testing.assert_close(packed_uncond, sd3.encode_prompt(["red", "red"])[0], rtol=0, atol=1e-6)
    assert packed.shape == packed_uncond.shape
    images = sd3(PROMPTS, num_inference_steps=2, negative_prompt=["red", "green"])
    assert (images - sd3(PROMPTS, num_inference_steps=2)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "negative_prompt, error, match",
    [
        (["red"], ValueError, r"negative_prompt must be one str or one per prompt \(2\); got 1"),
        (["red", "green", "blue"], ValueError, r"negative_prompt .* got 3"),
        (3, TypeError, "negative_prompt must be None, a str or a list of str; got int"),
        (["red", 1], TypeError, "negative_prompt must be"),
        ("a zebra", ValueError, r"negative_prompt: .*\['zebra'\]"),
    ],
)
def test_bad_negative_prompts_are_named(pipe, negative_prompt, error, match):
    with pytest.raises(error, match=match):
        pipe(PROMPTS, num_inference_steps=1, negative_prompt=negative_prompt)
    with pytest.raises(error, match=match):
        pipe.encode_prompt(PROMPTS, negative_prompt)
