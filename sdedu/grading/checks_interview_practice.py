"""Interview questions Q8-Q10 (solutions/11_interview_questions.ipynb): image quality (the Frechet
distance behind FID, small code), the generative families (a mapping, and the write-up's list of
"generation networks", multiple choice) and a minimal sampling loop with classifier-free guidance (small
code, and what is wrong with the write-up's code, multiple choice). Q1-Q7 and the shared helpers are in
`checks_interview`.
"""

from __future__ import annotations

import math

import torch

from sdedu.grading.checks_interview import NOTEBOOK, multiple_choice, seed_says
from sdedu.grading.errors import describe, fail
from sdedu.grading.expect import expect_number, expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.pipeline.loop import denoise


def frechet_reference(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)) (Heusel et al. 2017), in float64."""
    mu1, cov1, mu2, cov2 = (v.double() for v in (mu1, cov1, mu2, cov2))
    eigenvalues = torch.linalg.eigvals(cov1 @ cov2).real.clamp(min=0)
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * eigenvalues.sqrt().sum())


def _frechet_cases(trial: Trial):
    g = trial.generator(5)

    def spd(d):
        a = torch.randn(d, d, generator=g, dtype=torch.float64)
        return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)

    mu = torch.randn(3, generator=g, dtype=torch.float64)
    cov = spd(3)
    return [
        ("1 (two identical Gaussians in 3-D: the distance is 0)", mu, cov, mu.clone(), cov.clone()),
        (
            "2 (diagonal covariances in 2-D)",
            torch.tensor([0.0, 1.0], dtype=torch.float64),
            torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64)),
            torch.tensor([1.0, 1.0], dtype=torch.float64),
            torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)),
        ),
        (
            "3 (full covariances in 8-D)",
            torch.randn(8, generator=g, dtype=torch.float64),
            spd(8),
            torch.randn(8, generator=g, dtype=torch.float64),
            spd(8),
        ),
    ]


@register("interview_quality", "Q8 image quality: the Frechet distance behind FID (small code)", NOTEBOOK)
def check_quality(frechet_distance, trial: Trial) -> str:
    item = "interview_quality"
    for case, mu1, cov1, mu2, cov2 in _frechet_cases(trial):
        with trial.case(case):
            got = trial.call(
                item,
                frechet_distance,
                [("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)],
                case=case,
                name="frechet_distance",
            )
            expected = frechet_reference(mu1, cov1, mu2, cov2)
            mean_term = float(((mu1 - mu2) ** 2).sum())
            hint = "FID = ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)); Tr((C1 C2)^(1/2)) is the sum of the square roots of the eigenvalues of C1 C2."
            if isinstance(got, (int, float)) and math.isfinite(got):
                if math.isclose(got, expected - mean_term + math.sqrt(mean_term), rel_tol=1e-4) and mean_term > 0:
                    hint = "the mean term is the *squared* distance between the means."
                elif math.isclose(
                    got,
                    float(
                        ((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * torch.trace(cov1 @ cov2)
                    ),
                    rel_tol=1e-4,
                ):
                    hint = "the cross term needs the matrix square root of C1 C2, not C1 C2 itself."
            expect_number(item, case, got, expected, name="the distance", rel=1e-4, abs_tol=1e-6, hint=hint)
    return "3 cases"


@register(
    "interview_generative_families", "Q9 diffusion vs GAN vs VAE (match each family to its description)", NOTEBOOK
)
def check_generative_families(answer, trial: Trial) -> str:
    item = "interview_generative_families"
    right = {"gan": "a", "vae": "b", "diffusion": "c"}
    if not isinstance(answer, dict):
        fail(
            item,
            "1 (the mapping)",
            f"give a dict like {{'gan': ..., 'vae': ..., 'diffusion': ...}}; got {describe(answer)}.",
            None,
        )
    given = {str(k).strip().lower(): str(v).strip().lower() for k, v in answer.items()}
    if set(given) != set(right):
        fail(item, "1 (the mapping)", f"the keys should be {sorted(right)}; got {sorted(given)}.", None)
    why = {
        "gan": "which family has a discriminator?",
        "vae": "which family is trained on a bound on the likelihood (the ELBO)?",
        "diffusion": "which family needs many network evaluations per sample?",
    }
    for family in ("diffusion", "gan", "vae"):
        if given[family] != right[family]:
            fail(item, "1 (the mapping)", f"{family!r} is matched to the wrong description.", why[family])
    return "all three matched"


SEED_FAMILIES = "generation networks include VAE, GAN and self-attention models like SD"
SEED_CODE = 'from stable_diffusion import StableDiffusionModel; load_weights(".pth"); transform=Resize(512)'


@register(
    "interview_seed_families",
    "Q9 the write-up's list of generation networks: what SD is among them (multiple choice)",
    NOTEBOOK,
)
def check_seed_families(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_seed_families",
        answer,
        "abcde",
        {"b", "c", "e"},
        {
            "a": seed_says(
                SEED_FAMILIES,
                "a family of generative models is defined by how it is trained and sampled (adversarial game, "
                "ELBO, denoising); attention is a layer that any of them may contain (SAGAN is a GAN with "
                "self-attention). SD is a diffusion model whose denoiser contains attention layers.",
            ),
            "b": "how is SD's UNet trained, and how many times is it called per image?",
            "c": "what turns SD's final latent into pixels?",
            "d": seed_says(
                SEED_FAMILIES,
                "SD's VAE is not an alternative to SD but one of its parts: it only maps images to latents and "
                "back; the diffusion model (the UNet and its sampler) generates the latent.",
            ),
            "e": "look for attention inside SD's UNet: self-attention over latent positions, cross-attention to the "
            "text tokens.",
        },
    )


@register(
    "interview_seed_code",
    "Q10 what is wrong with the write-up's code (multiple choice)",
    NOTEBOOK,
)
def check_seed_code(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_seed_code",
        answer,
        "abcde",
        {"a", "b", "c"},
        {
            "a": "try `pip download stable_diffusion` in your head: which library actually ships SD pipelines, "
            "and what is its class called?",
            "b": "what does torch.load do to a .pth file to read it, and what can a pickle do when it is loaded?",
            "c": "what would a resize transform do to a string?",
            "d": seed_says(
                SEED_CODE,
                "no package `stable_diffusion` with a `StableDiffusionModel` exists; diffusers' class is "
                "`StableDiffusionPipeline.from_pretrained(...)`, its weights are safetensors files, and the output "
                "size is set by `height`/`width` (the latent's size), not by a transform.",
            ),
            "e": "torch.no_grad saves memory and time; without it the same image comes out. Look at the three lines "
            "themselves.",
        },
    )


def _fake_model(x, t, cond):
    """A deterministic stand-in for the UNet: eps depends on x, t and the condition."""
    return torch.tanh(0.3 * x + cond.mean() + 0.001 * float(t))


def guided_loop_reference(model, sampler, x_T, cond, uncond, guidance_scale):
    """Q10's loop, run by the one denoising loop (sdedu.pipeline.denoise); the two predictions are made
    inside one model call, as Q10 writes them, so the known mistakes can be plugged in as `model`."""

    def guided(x, t_batch, c):
        t = t_batch[0]  # Q10's model takes the loop's one timestep, not one per sample
        eps_cond, eps_uncond = model(x, t, cond), model(x, t, uncond)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return denoise(guided, sampler, x_T, cond=cond)


@register("interview_minimal_code", "Q10 a minimal sampling loop with classifier-free guidance (small code)", NOTEBOOK)
def check_minimal_code(sample, trial: Trial) -> str:
    item = "interview_minimal_code"
    from sdedu.samplers import DDIMSampler
    from sdedu.schedules import NoiseSchedule

    sampler = DDIMSampler(NoiseSchedule.linear(100))
    sampler.set_timesteps(10)
    g = trial.generator(7)
    cond, uncond = torch.full((1, 4, 8), 0.5), torch.zeros(1, 4, 8)
    for case, scale in [
        ("1 (guidance_scale 7.5, 10 DDIM steps)", 7.5),
        ("2 (guidance_scale 1.0: the plain conditional model)", 1.0),
    ]:
        x_T = torch.randn(2, 4, 8, 8, generator=g)
        got = trial.call(
            item,
            sample,
            [
                ("model", _fake_model),
                ("sampler", sampler),
                ("x_T", x_T),
                ("cond", cond),
                ("uncond", uncond),
                ("guidance_scale", scale),
            ],
            case=case,
            name="sample",
            error_hints={
                "SamplerStep": "sampler.step returns a SamplerStep: the next sample is its .x_prev.",
                "tuple": "sampler.step returns a SamplerStep (a named tuple): the next sample is its .x_prev.",
                "sequence": "sampler.step returns a SamplerStep (a named tuple): the next sample is its .x_prev.",
            },
        )
        args = (_fake_model, sampler, x_T, cond, uncond)
        mistakes = [
            (
                lambda: guided_loop_reference(*args, -scale),
                "check the sign of the guidance term: it pushes *towards* the prompt, away from the unconditional prediction.",
            ),
            (
                lambda: guided_loop_reference(
                    lambda x, t, c: _fake_model(x, t, uncond if c is cond else cond), sampler, x_T, cond, uncond, scale
                ),
                "the conditional and unconditional predictions have swapped roles: the formula starts from "
                "eps_uncond and moves towards eps_cond.",
            ),
            (
                lambda: guided_loop_reference(*args, 1.0),
                "the result is the plain conditional model's: apply guidance_scale, and make the unconditional "
                "prediction with `uncond`.",
            ),
        ]
        expect_tensor(
            item,
            case,
            got,
            guided_loop_reference(*args, scale),
            name="x_0",
            mistakes=mistakes,
            default_hint="one model call with cond and one with uncond per step; "
            "eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond); x = sampler.step(eps, t, x).x_prev.",
        )
    return "2 cases"
