"""Checks for exercises 05 (the guided sampling loop) and 06 (making it fast).

Both run on a tiny *randomly initialised* TinyStableDiffusion (`tiny_pipeline()`): the checks
compare the learner's loop with the library's pipeline for the same seed, and for that the
weights need not be trained, only fixed. The learner's loop must reproduce

    cond, uncond = pipe.encode_prompt(prompts)
    z_T ~ N(0, I), shape (B, 4, 8, 8), image i from its own CPU torch.Generator().manual_seed(seed + i)
    for t in DDIM timesteps:  eps = eps_uncond + w (eps_cond - eps_uncond);  z = sampler.step(eps, t, z).x_prev
    images = pipe.decode_latents(z)

and, in exercise 06, do it with each distinct prompt encoded once (a cache) and one batched UNet
call per step.
"""

from __future__ import annotations

import torch

from sdedu.grading.errors import describe, fail
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.pipeline.loop import denoise
from sdedu.schedules import NoiseSchedule

PROMPT = "a large red circle in the top left"


def tiny_pipeline(seed: int = 0):
    """A TinyStableDiffusion with small random parts (fast, deterministic, untrained)."""
    from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer
    from sdedu.models.unet import UNet, UNetConfig
    from sdedu.models.vae import VAE, VAEConfig
    from sdedu.pipeline import TinyStableDiffusion

    torch.manual_seed(seed)
    text_encoder = TextEncoder(TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32))
    unet = UNet(UNetConfig(channels=(32, 32), context_dim=32, head_dim=16, norm_groups=8))
    vae = VAE(VAEConfig(channels=(8, 16, 16)))
    # A fresh UNet starts its residual branches at zero (LDM's zero_module), which would make its
    # output ignore the prompt: give those layers small random values so that guidance matters.
    with torch.no_grad():
        for parameter in unet.parameters():
            if parameter.dim() > 1 and not parameter.any():
                parameter.normal_(0.0, 0.05)
    return TinyStableDiffusion(Tokenizer(), text_encoder, vae, unet, NoiseSchedule.scaled_linear())


def reference_loop(pipe, prompts, num_inference_steps, guidance_scale, seed, *, combine=None, sampler="ddim"):
    """The guided loop with a known mistake plugged in (`combine`, `sampler`), on the one denoising loop.

    The right answer is `pipe(...)` itself; this builds the wrong versions a learner may write. The
    guidance rule under test runs inside one model call, so `denoise` runs it unguided (no uncond).
    """
    cond, uncond = pipe.encode_prompt(prompts)
    generator = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]  # one per image
    z = torch.cat([torch.randn((1, 4, 8, 8), generator=g) for g in generator]).to(pipe.device)
    scheduler = pipe.make_sampler(sampler)
    scheduler.set_timesteps(num_inference_steps)
    combine = combine or (lambda c, u, s: u + s * (c - u))

    def guided(z, t_batch, cond):
        return combine(pipe.unet(z, t_batch, cond), pipe.unet(z, t_batch, uncond), guidance_scale)

    return pipe.decode_latents(denoise(guided, scheduler, z, cond=cond, generator=generator))


def _sampling_mistakes(pipe, prompts, steps, scale, seed):
    args = (pipe, prompts, steps, scale, seed)
    return [
        (
            lambda: reference_loop(*args, combine=lambda c, u, s: u - s * (c - u)),
            "check the sign of the guidance term: it pushes towards the prompt, away from the unconditional prediction.",
        ),
        (
            lambda: reference_loop(*args, combine=lambda c, u, s: c + s * (u - c)),
            "the conditional and unconditional predictions have swapped roles: start from eps_uncond, move towards eps_cond.",
        ),
        (
            lambda: reference_loop(*args, combine=lambda c, u, s: c),
            "the result is the plain conditional model's: apply guidance_scale to (eps_cond - eps_uncond).",
        ),
        (
            lambda: reference_loop(*args, combine=lambda c, u, s: s * c),
            "guidance scales the *difference* eps_cond - eps_uncond and adds it to eps_uncond, not eps_cond alone.",
        ),
        (
            lambda: reference_loop(*args, sampler="ddpm"),
            'use the deterministic DDIM sampler, pipe.make_sampler("ddim"), as the pipeline does by default.',
        ),
        (
            lambda: reference_loop(pipe, prompts, 50, scale, seed),
            "call sampler.set_timesteps(num_inference_steps) before the loop (the sampler starts with 50 steps).",
        ),
    ]


SAMPLING_CASES = [
    ("1 (4 steps, guidance 3.0, seed 0)", [PROMPT], 4, 3.0, 0),
    ("2 (3 steps, guidance 7.5, seed 5, two prompts)", [PROMPT, "a blue shape"], 3, 7.5, 5),
    ("3 (5 steps, guidance 1.0: the conditional model, seed 2)", ["a small green triangle"], 5, 1.0, 2),
]
SAMPLING_ERRORS = {
    "SamplerStep": "sampler.step returns a SamplerStep: the next latent is its .x_prev.",
    "expand": "the UNet takes one timestep per latent: t.expand(B) (or torch.full((B,), t)).",
    "must have shape (B,)": "the UNet takes one timestep per latent: t.expand(B) (or torch.full((B,), t)).",
}


def _expect_pipeline_images(item: str, case: str, got, call: tuple, default_hint: str) -> None:
    """The learner's images must equal the pipeline's for the same (pipe, prompts, steps, scale, seed)."""
    pipe, prompts, steps, scale, seed = call
    expected = pipe(prompts, num_inference_steps=steps, guidance_scale=scale, seed=seed)
    expect_tensor(
        item,
        case,
        got,
        expected,
        name="the images",
        atol=1e-4,
        rtol=1e-3,
        mistakes=_sampling_mistakes(pipe, prompts, steps, scale, seed),
        shape_hint="return images: decode the final latents with pipe.decode_latents(z).",
        default_hint=default_hint,
    )


@register(
    "guided_sampling",
    "generate(pipe, prompts, steps, guidance_scale, seed): the guided loop equals the pipeline",
    "05_inference",
)
def check_guided_sampling(generate, trial: Trial) -> str:
    item = "guided_sampling"
    pipe = tiny_pipeline()
    for case, prompts, steps, scale, seed in SAMPLING_CASES:
        with trial.case(case):
            got = trial.call(
                item,
                generate,
                [
                    ("pipe", pipe),
                    ("prompts", prompts),
                    ("num_inference_steps", steps),
                    ("guidance_scale", scale),
                    ("seed", seed),
                ],
                case=case,
                name="generate",
                frozen=(),
                error_hints=SAMPLING_ERRORS,
            )
            _expect_pipeline_images(
                item,
                case,
                got,
                (pipe, prompts, steps, scale, seed),
                default_hint="start from z_T drawn image by image: image i from torch.randn((1, 4, 8, 8), "
                "generator=torch.Generator().manual_seed(seed + i)), moved to pipe.device.",
            )
    return f"{len(SAMPLING_CASES)} cases equal to TinyStableDiffusion.__call__"


class _Counter:
    """Counts the calls of a module and the batch rows they carry, while `counting` is True."""

    def __init__(self, module):
        self.module, self.calls, self.rows, self.counting = module, 0, 0, True
        self.original = module.forward

        def counted(*args, **kwargs):
            if self.counting:
                self.calls += 1
                self.rows += args[0].shape[0] if args and isinstance(args[0], torch.Tensor) else 0
            return self.original(*args, **kwargs)

        module.forward = counted

    def restore(self):
        self.module.forward = self.original


@register(
    "embedding_cache", "encode_cached(pipe, prompts, cache): each distinct prompt is encoded once", "06_performance"
)
def check_embedding_cache(encode_cached, trial: Trial) -> str:
    item = "embedding_cache"
    pipe = tiny_pipeline()
    cache: dict = {}
    calls = [[PROMPT, "a blue shape"], ["a blue shape", PROMPT], [PROMPT], ["a small green triangle", PROMPT]]
    counter = _Counter(pipe.text_encoder)
    try:
        for i, prompts in enumerate(calls):
            case = f"{i + 1} (call {i + 1} of {len(calls)} with the same cache: {prompts})"
            got = trial.call(
                item,
                encode_cached,
                [("pipe", pipe), ("prompts", prompts), ("cache", cache)],
                case=case,
                name="encode_cached",
                frozen=(),
            )
            if not (isinstance(got, tuple) and len(got) == 2):
                fail(
                    item,
                    case,
                    f"encode_cached should return (cond, uncond), like pipe.encode_prompt; got {describe(got)}.",
                    None,
                )
            counter.counting = False
            expected = pipe.encode_prompt(prompts)
            counter.counting = True
            for name, g, e in zip(("cond", "uncond"), got, expected):
                expect_tensor(
                    item,
                    case,
                    g,
                    e,
                    name=name,
                    atol=1e-5,
                    default_hint="the embeddings must equal pipe.encode_prompt(prompts); uncond is the "
                    'encoding of the empty prompt "", repeated for every prompt.',
                )
    finally:
        counter.restore()
    distinct = 4  # three prompts and the empty one
    if counter.rows > distinct:
        fail(
            item,
            f"{len(calls)} calls, 3 distinct prompts and the empty prompt",
            f"the text encoder encoded {counter.rows} prompts; at most {distinct} were needed.",
            "key the cache by each prompt string (not by the list of prompts), and cache the empty prompt too.",
        )
    return f"{counter.rows} prompts encoded for {sum(len(c) for c in calls)} requested"


@register(
    "fast_sampling",
    "generate_fast(pipe, prompts, steps, guidance_scale, seed, cache): one batched UNet call per step",
    "06_performance",
)
def check_fast_sampling(generate_fast, trial: Trial) -> str:
    item = "fast_sampling"
    pipe = tiny_pipeline()
    cache: dict = {}
    for case, prompts, steps, scale, seed in SAMPLING_CASES[:2]:
        with trial.case(case):
            unet = _Counter(pipe.unet)
            try:
                got = trial.call(
                    item,
                    generate_fast,
                    [
                        ("pipe", pipe),
                        ("prompts", prompts),
                        ("num_inference_steps", steps),
                        ("guidance_scale", scale),
                        ("seed", seed),
                        ("cache", cache),
                    ],
                    case=case,
                    name="generate_fast",
                    frozen=(),
                    error_hints=SAMPLING_ERRORS,
                )
            finally:
                unet.restore()
            _expect_pipeline_images(
                item,
                case,
                got,
                (pipe, prompts, steps, scale, seed),
                default_hint="the result must equal pipe(prompts, num_inference_steps, guidance_scale, seed=seed).",
            )
            if unet.calls != steps:
                fail(
                    item,
                    case,
                    f"the UNet was called {unet.calls} times for {steps} steps.",
                    "batch the conditional and unconditional inputs into one call per step: torch.cat([z, z]) with "
                    "torch.cat([uncond, cond]), then .chunk(2).",
                )
    return "equal to the pipeline, one UNet call per step"
