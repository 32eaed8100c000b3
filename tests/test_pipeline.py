"""TinyStableDiffusion with small randomly initialised parts: shapes, seeds, modes, bad input.

The shipped model's quality is tested in tests/test_shipped_weights.py.
"""

import pytest
import torch

from sdedu.data import shapes
from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer  # noqa: E402
from sdedu.models.unet import UNet, UNetConfig  # noqa: E402
from sdedu.models.vae import VAE, VAEConfig  # noqa: E402
from sdedu.pipeline import TinyStableDiffusion, Trajectory
from sdedu.schedules import NoiseSchedule


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    text_encoder = TextEncoder(TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32))
    unet = UNet(UNetConfig(channels=(32, 32), context_dim=32, head_dim=16, norm_groups=8))
    vae = VAE(VAEConfig(channels=(8, 16, 16)))
    return TinyStableDiffusion(Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear())


PROMPT = "a large red circle in the top left"


def test_text_to_image_shape_range_and_batch(pipe):
    images = pipe([PROMPT, "a blue shape"], num_inference_steps=3, num_images_per_prompt=2)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert not torch.equal(images[0], images[1])  # different noise per image


def test_same_seed_bit_identical_other_seed_different(pipe):
    a = pipe(PROMPT, num_inference_steps=3, seed=5)
    b = pipe(PROMPT, num_inference_steps=3, seed=5)
    c = pipe(PROMPT, num_inference_steps=3, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    d = pipe(PROMPT, num_inference_steps=3, seed=5, sampler="ddpm")
    e = pipe(PROMPT, num_inference_steps=3, seed=5, sampler="ddpm")
    f = pipe(PROMPT, num_inference_steps=3, seed=5, sampler="ddim", eta=1.0)
    assert torch.equal(d, e) and not torch.equal(a, d) and not torch.equal(a, f)


def test_loop_matches_a_hand_written_loop(pipe):
    """The pipeline is exactly: encode, noise, (batched UNet, guidance, DDIM step) x N, decode."""
    from sdedu.guidance import classifier_free_guidance
    from sdedu.samplers import DDIMSampler

    out = pipe(PROMPT, num_inference_steps=4, guidance_scale=2.5, seed=3)
    cond, uncond = pipe.encode_prompt([PROMPT])
    g = torch.Generator().manual_seed(3)
    z = torch.randn((1, 4, 8, 8), generator=g)
    sampler = DDIMSampler(pipe.schedule)
    sampler.set_timesteps(4)
    with torch.no_grad():
        for t in sampler.timesteps:
            eps_uncond = pipe.unet(z, t.view(1), uncond)
            eps_cond = pipe.unet(z, t.view(1), cond)
            z = sampler.step(classifier_free_guidance(eps_uncond, eps_cond, 2.5), t, z).x_prev
        expected = pipe.vae.decode(z / pipe.vae.scale_factor).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_ddpm_with_all_T_steps_is_algorithm_2(pipe):
    """pipe(..., sampler="ddpm", num_inference_steps=T) is Ho et al. 2020's Algorithm 2, line for line."""
    T = pipe.schedule.T
    out = pipe(PROMPT, sampler="ddpm", num_inference_steps=T, guidance_scale=1.0, seed=4)
    cond, _ = pipe.encode_prompt([PROMPT])
    betas, alphas, alpha_bar = pipe.schedule.betas, pipe.schedule.alphas, pipe.schedule.alpha_bar
    g = torch.Generator().manual_seed(4)  # image 0's stream of seed 4
    x = torch.randn((1, 4, 8, 8), generator=g)  # 1: x_T ~ N(0, I)
    with torch.no_grad():
        for t in range(T - 1, -1, -1):  # 2: for t = T, ..., 1 (code t is paper t + 1)
            z = torch.randn((1, 4, 8, 8), generator=g) if t > 0 else torch.zeros(1, 4, 8, 8)  # 3
            eps = pipe.unet(x, torch.tensor([t]), cond)
            sigma = ((1 - alpha_bar[t - 1]) / (1 - alpha_bar[t]) * betas[t]) ** 0.5 if t > 0 else 0.0
            x = (x - betas[t] / (1 - alpha_bar[t]) ** 0.5 * eps) / alphas[t] ** 0.5 + sigma * z  # 4
        expected = pipe.vae.decode(x / pipe.vae.scale_factor).clamp(0, 1)  # 6: return x_0
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-3)


def test_ddim_keeps_its_offset_rule_for_the_step_count(pipe):
    with pytest.raises(ValueError, match="steps_offset"):
        pipe(PROMPT, num_inference_steps=pipe.schedule.T)
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(PROMPT, sampler="ddpm", num_inference_steps=pipe.schedule.T + 1)


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_an_image_depends_on_its_prompt_and_seed_not_on_its_batch(pipe, sampler, eta):
    prompts = ["a red shape", "a blue square", "a triangle", PROMPT, "a shape", "", "a green circle", "a square"]
    kwargs = dict(num_inference_steps=3, seed=11, sampler=sampler, eta=eta)
    batch = pipe(prompts, **kwargs)
    # Image i of a call with seed s is the image of seed s + i alone: here position 3, seed 11 + 3.
    alone = pipe(PROMPT, **{**kwargs, "seed": 14})
    torch.testing.assert_close(batch[3:4], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batch[3:4], pipe(PROMPT, **kwargs))
    pair = pipe([PROMPT, PROMPT], **{**kwargs, "seed": 13})
    torch.testing.assert_close(pair[1:2], alone, atol=1e-5, rtol=1e-4)


def test_img2img_and_inpaint_images_do_not_depend_on_their_batch(pipe):
    images, _, _ = shapes.sample(4, seed=2)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    batch = pipe.img2img(images, "a red shape", strength=0.7, num_inference_steps=4, sampler="ddpm", seed=3)
    alone = pipe.img2img(images[2:3], "a red shape", strength=0.7, num_inference_steps=4, sampler="ddpm", seed=5)
    torch.testing.assert_close(batch[2:3], alone)
    batch = pipe.inpaint(images, mask, "a red shape", num_inference_steps=3, sampler="ddpm", seed=3)
    alone = pipe.inpaint(images[2:3], mask, "a red shape", num_inference_steps=3, sampler="ddpm", seed=5)
    torch.testing.assert_close(batch[2:3], alone)


def test_one_loop_runs_hooks_and_skips_the_unconditional_branch_at_scale_one(pipe):
    from sdedu.pipeline import denoise, make_sampler

    calls = []

    def unet(z, t, cond):
        calls.append(z.shape[0])
        return pipe.unet(z, t, cond)

    sampler = make_sampler("ddim", pipe.schedule)
    sampler.set_timesteps(3)
    cond, uncond = pipe.encode_prompt(["a shape", "a square"])
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    seen = []
    out = denoise(unet, sampler, z, cond, uncond, 1.0, on_step=lambda i, t, z, x0: seen.append(int(t)))
    assert calls == [2, 2, 2] and seen == sampler.timesteps.tolist()
    calls.clear()
    zero = denoise(unet, sampler, z, cond, uncond, 2.0, on_step=lambda i, t, z, x0: torch.zeros_like(z))
    assert calls == [4, 4, 4] and not zero.any() and out.any()


def test_guidance_scale_one_is_the_conditional_model_and_zero_ignores_the_prompt(pipe):
    a = pipe(PROMPT, num_inference_steps=3, guidance_scale=1.0, seed=1)
    b = pipe(PROMPT, num_inference_steps=3, guidance_scale=1.0 + 1e-9, seed=1)  # batched path
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    c = pipe(PROMPT, num_inference_steps=3, guidance_scale=0.0, seed=1)
    d = pipe("", num_inference_steps=3, guidance_scale=1.0, seed=1)
    torch.testing.assert_close(c, d, atol=1e-5, rtol=1e-4)


def test_encode_prompt_uncond_is_the_empty_prompt(pipe):
    cond, uncond = pipe.encode_prompt(["a red shape", "a square"])
    assert cond.shape == uncond.shape == (2, 12, 32)
    empty, _ = pipe.encode_prompt("")
    torch.testing.assert_close(uncond[0], empty[0])
    torch.testing.assert_close(uncond[1], empty[0])


def test_unet_runs_channels_last_and_saves_as_usual(pipe, tmp_path):
    from safetensors.torch import load_file

    from sdedu.weights import save_component

    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    save_component(pipe.unet, "unet", tmp_path)
    saved = load_file(str(tmp_path / "unet.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in pipe.unet.state_dict().items())


def test_trajectory(pipe):
    out = pipe([PROMPT, "a shape"], num_inference_steps=5, return_trajectory=True)
    assert isinstance(out, Trajectory)
    assert out.images.shape == (2, 3, 32, 32)
    assert out.latents.shape == (6, 2, 4, 8, 8)
    assert out.x0_preds.shape == (5, 2, 4, 8, 8)
    assert out.timesteps.tolist() == sorted(out.timesteps.tolist(), reverse=True)
    torch.testing.assert_close(out.images, pipe.decode_latents(out.latents[-1]))
    assert pipe.decode_latents(out.x0_preds[2]).shape == (2, 3, 32, 32)


def test_img2img_strength_endpoints(pipe):
    images, _, _ = shapes.sample(2, seed=0)
    zero = pipe.img2img(images, "a blue square", strength=0.0)
    torch.testing.assert_close(zero, pipe.decode_latents(pipe.encode_images(images)))
    half = pipe.img2img(images, "a blue square", strength=0.5, num_inference_steps=4, return_trajectory=True)
    assert half.x0_preds.shape[0] == 2 and half.images.shape == (2, 3, 32, 32)
    one = pipe.img2img(images[0], ["a blue square", "a red shape"], strength=1.0, num_inference_steps=3)
    assert one.shape == (2, 3, 32, 32)
    assert torch.equal(
        one, pipe.img2img(images[0], ["a blue square", "a red shape"], strength=1.0, num_inference_steps=3)
    )


def test_inpaint_keeps_the_unmasked_region(pipe):
    images, _, _ = shapes.sample(2, seed=1)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :16, :16] = 1.0
    out = pipe.inpaint(images, mask, "a green circle in the top left", num_inference_steps=3)
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out * (1 - mask), images * (1 - mask))
    # Without pasting, the unmasked latents still end exactly on the image's latents.
    traj = pipe.inpaint(
        images, mask[0, 0], "a shape", num_inference_steps=3, keep_unmasked=False, return_trajectory=True
    )
    latent_keep = 1 - torch.nn.functional.max_pool2d(mask, 4)
    torch.testing.assert_close(traj.latents[-1] * latent_keep, pipe.encode_images(images) * latent_keep)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, TypeError, "num_inference_steps"),
        ({"guidance_scale": -1.0}, ValueError, "guidance_scale"),
        ({"sampler": "dpm++"}, ValueError, "sampler must be one of"),
        ({"eta": -0.5}, ValueError, "eta"),
        ({"num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
    ],
)
def test_bad_settings(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe(PROMPT, **kwargs)


def test_bad_prompts_images_and_masks(pipe):
    with pytest.raises(ValueError, match="purple"):
        pipe("a purple circle", num_inference_steps=1)
    with pytest.raises(TypeError, match="prompt"):
        pipe(["a red shape", 3], num_inference_steps=1)
    with pytest.raises(TypeError, match="prompt"):
        pipe([], num_inference_steps=1)
    images, _, _ = shapes.sample(2, seed=0)
    with pytest.raises(ValueError, match="strength"):
        pipe.img2img(images, "a shape", strength=1.5)
    with pytest.raises(ValueError, match="image must have shape"):
        pipe.img2img(torch.rand(2, 3, 16, 16), "a shape")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.img2img(images * 2 - 1, "a shape")
    with pytest.raises(ValueError, match="one per image"):
        pipe.img2img(images, ["a shape"] * 3)
    with pytest.raises(ValueError, match="mask must have shape"):
        pipe.inpaint(images, torch.ones(2, 3, 32, 32), "a shape")
    with pytest.raises(ValueError, match="mask must have values"):
        pipe.inpaint(images, torch.full((2, 1, 32, 32), 2.0), "a shape")
