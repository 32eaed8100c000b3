"""The bridge to diffusers: schedulers with sdedu's betas, the same images from the same noise,
a UNet2DConditionModel laid out like sdedu's that drops into the sdedu pipeline and loss."""

import pytest
import torch

from sdedu import diffusers_bridge as bridge  # noqa: E402
from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer  # noqa: E402
from sdedu.models.unet import UNet, UNetConfig  # noqa: E402
from sdedu.models.vae import VAE, VAEConfig  # noqa: E402
from sdedu.pipeline import TinyStableDiffusion  # noqa: E402
from sdedu.samplers import DDIMSampler, DDPMSampler  # noqa: E402
from sdedu.schedules import NoiseSchedule  # noqa: E402

SMALL_UNET = UNetConfig(channels=(32, 64), context_dim=32, head_dim=16, norm_groups=8)
PROMPTS = ["a large red circle in the top left", "a blue shape"]


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    text_encoder = TextEncoder(TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32))
    unet = UNet(SMALL_UNET)
    vae = VAE(VAEConfig(channels=(8, 16, 16)))
    return TinyStableDiffusion(Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear())


@pytest.mark.parametrize("name", sorted(bridge.SCHEDULERS))
def test_every_scheduler_shares_the_schedule(name):
    schedule = NoiseSchedule.cosine()
    scheduler = bridge.make_scheduler(name, schedule)
    torch.testing.assert_close(scheduler.alphas_cumprod.float(), schedule.alpha_bar)


def test_timesteps_match_sdedus_samplers():
    schedule = NoiseSchedule.scaled_linear()
    for name, sampler in (("ddim", DDIMSampler(schedule)), ("ddpm", DDPMSampler(schedule))):
        scheduler = bridge.make_scheduler(name, schedule)
        scheduler.set_timesteps(25)
        sampler.set_timesteps(25)
        assert torch.equal(scheduler.timesteps.long(), sampler.timesteps)


def test_diffusers_ddim_gives_the_same_images_from_the_same_noise(pipe):
    ours = pipe(PROMPTS, num_inference_steps=6, guidance_scale=2.0, seed=4)
    theirs, latents = bridge.sample_with_scheduler(
        pipe, PROMPTS, bridge.make_scheduler("ddim", pipe.schedule), 6, guidance_scale=2.0, seed=4, return_latents=True
    )
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert latents.shape == (2, 4, 8, 8)
    other_seed = bridge.sample_with_scheduler(pipe, PROMPTS, bridge.make_scheduler("ddim", pipe.schedule), 6, seed=5)
    assert not torch.allclose(other_seed, ours)


def test_diffusers_ddpm_draws_the_same_noise_per_image(pipe):
    """Stochastic parity: one CPU generator per image, in sdedu's DDPM and in diffusers' DDPMScheduler."""
    ours = pipe(PROMPTS, sampler="ddpm", num_inference_steps=8, seed=7)
    theirs = bridge.sample_with_scheduler(pipe, PROMPTS, bridge.make_scheduler("ddpm", pipe.schedule), 8, seed=7)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["euler", "dpm++", "ddpm"])
def test_other_schedulers_run_and_are_seeded(pipe, name):
    a = bridge.sample_with_scheduler(pipe, PROMPTS, bridge.make_scheduler(name, pipe.schedule), 5, seed=1)
    b = bridge.sample_with_scheduler(pipe, PROMPTS, bridge.make_scheduler(name, pipe.schedule), 5, seed=1)
    assert a.shape == (2, 3, 32, 32) and torch.isfinite(a).all() and torch.equal(a, b)


def test_a_scheduler_with_two_model_calls_per_step_runs_in_the_one_loop(pipe):
    """Heun repeats timesteps (2 evaluations per step) and scales its input: the loop iterates as given."""
    import diffusers

    scheduler = diffusers.HeunDiscreteScheduler(**bridge.scheduler_config(pipe.schedule))
    calls, unet = [], pipe.unet
    pipe.unet = lambda z, t, cond: calls.append(int(t[0])) or unet(z, t, cond)
    try:
        images = bridge.sample_with_scheduler(pipe, PROMPTS, scheduler, 4, seed=0)
    finally:
        pipe.unet = unet
    assert len(calls) == len(scheduler.timesteps) == 2 * 4 - 1 and len(set(calls)) == 4
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_bad_scheduler_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        bridge.make_scheduler("heun", NoiseSchedule.linear())
    with pytest.raises(TypeError, match="schedule must be"):
        bridge.scheduler_config(torch.linspace(1e-4, 0.02, 1000))


def test_unet_config_matches_sdedus_layout():
    config = bridge.unet2d_condition_config(SMALL_UNET)
    assert config["block_out_channels"] == (32, 64) and config["cross_attention_dim"] == 32
    unet = bridge.build_diffusers_unet(SMALL_UNET)
    heads = [block.attentions[0].transformer_blocks[0].attn2.heads for block in unet.down_blocks]
    assert heads == [c // SMALL_UNET.head_dim for c in SMALL_UNET.channels]  # head width 16, as in sdedu
    with pytest.raises(TypeError, match="UNetConfig"):
        bridge.unet2d_condition_config({"channels": (32, 64)})


def test_diffusers_unet_drops_into_the_pipeline_and_the_loss(pipe):
    from sdedu.diffusion import noise_prediction_loss

    unet = bridge.DiffusersUNet(bridge.build_diffusers_unet(SMALL_UNET))
    x_t, t, cond = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999]), torch.randn(3, 12, 32)
    assert unet(x_t, t, cond).shape == (3, 4, 8, 8)
    loss = noise_prediction_loss(unet, x_t, pipe.schedule, generator=torch.Generator().manual_seed(0), cond=cond)
    loss.backward()
    assert all(p.grad is not None for p in unet.parameters() if p.requires_grad)
    swapped = TinyStableDiffusion(pipe.tokenizer, pipe.text_encoder, pipe.vae, unet.eval(), pipe.schedule)
    assert swapped("a red shape", num_inference_steps=3).shape == (1, 3, 32, 32)
    assert bridge.parameter_count(unet) > bridge.parameter_count(pipe.unet)  # diffusers' up path is deeper
