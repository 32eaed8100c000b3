"""Checks for the ten interview questions (solutions/11_interview_questions.ipynb).

Each question has a model answer in prose (in the notebook) and one part that is checked here:
a set of letters (multiple choice, possibly several right), a number to compute, a mapping, or a
small function. Letters are case-insensitive; a multiple-choice answer may be a string "ab", a
list or a set. The hints point at the idea behind a wrong choice, never at the letter.
"""

from __future__ import annotations

import math

import torch

from sdedu.grading.errors import describe, fail
from sdedu.grading.expect import expect_number, expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.pipeline.loop import denoise

NOTEBOOK = "11_interview_questions"


def _letters(item: str, answer, valid: str) -> set[str]:
    if isinstance(answer, str):
        letters = [c for c in answer.lower() if not c.isspace() and c not in ",;"]
    elif isinstance(answer, (list, tuple, set, frozenset)) and all(isinstance(a, str) for a in answer):
        letters = [a.strip().lower() for a in answer]
    else:
        fail(
            item,
            "1 (the letters)",
            f"give the letters of your choices as a string or a set, e.g. {{'a', 'c'}}; got {describe(answer)}.",
            None,
        )
    unknown = sorted(set(letters) - set(valid))
    if unknown:
        fail(item, "1 (the letters)", f"{unknown} are not among the choices {list(valid)}.", None)
    return set(letters)


def _multiple_choice(item: str, answer, valid: str, right: set[str], why: dict[str, str]) -> str:
    chosen = _letters(item, answer, valid)
    wrong = sorted(chosen - right)
    missing = sorted(right - chosen)
    if wrong:
        fail(item, "1 (the choices)", f"choice {wrong[0]!r} is not true.", why[wrong[0]])
    if missing:
        fail(item, "1 (the choices)", f"{len(missing)} true statement(s) not chosen.", why[missing[0]])
    return f"{len(right)} of {len(valid)} statements chosen, all true"


@register("interview_what_is_sd", "Q1 what Stable Diffusion is and where it is used (multiple choice)", NOTEBOOK)
def check_what_is_sd(answer, trial: Trial) -> str:
    return _multiple_choice(
        "interview_what_is_sd",
        answer,
        "abcde",
        {"a", "c", "d"},
        {
            "a": "where does the UNet of Stable Diffusion work: on pixels, or on something smaller?",
            "b": "a diffusion model learns a denoiser (a score function) for the whole image distribution; it does not "
            "store or paste training patches (calling it a texture model is a common misreading).",
            "c": "img2img and inpainting reuse the text-to-image model: they start the reverse process from a noised "
            "image, or keep the known pixels at every step.",
            "d": "think of what happened after the weights were published in 2022 (DreamBooth, LoRA, ControlNet...).",
            "e": "generation needs only the weights: everything the model knows is in its parameters.",
        },
    )


@register("interview_architecture", "Q2 architecture: how much smaller is the latent? (a number)", NOTEBOOK)
def check_architecture(answer, trial: Trial) -> str:
    expect_number(
        "interview_architecture",
        "1 (512 x 512 x 3 pixels vs a 64 x 64 x 4 latent)",
        answer,
        48,
        name="the reduction factor",
        hint="count the values on both sides: height x width x channels of the image, and of the latent.",
    )
    return "48x fewer values"


@register(
    "interview_diffusion_process",
    "Q3 the diffusion process: x_t for given alpha_bar_t, x0 and eps (a number)",
    NOTEBOOK,
)
def check_diffusion_process(answer, trial: Trial) -> str:
    expect_number(
        "interview_diffusion_process",
        "1 (alpha_bar_t = 0.64, x0 = 1.0, eps = 0.5)",
        answer,
        1.1,
        name="x_t",
        rel=1e-6,
        abs_tol=1e-6,
        hint="x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps: the coefficients are square roots of variances.",
    )
    return "x_t = 1.1"


@register("interview_unet_role", "Q4 the generation network's role: what the UNet predicts (multiple choice)", NOTEBOOK)
def check_unet_role(answer, trial: Trial) -> str:
    return _multiple_choice(
        "interview_unet_role",
        answer,
        "abcd",
        {"b"},
        {
            "a": "the UNet works in the VAE's latent space, and in Stable Diffusion v1 it is trained with the simple "
            "loss ||eps - eps_theta||^2.",
            "b": "what is the regression target of the training loss?",
            "c": "the text encoder produces the text embeddings; the UNet only reads them through cross-attention.",
            "d": "turning a prediction into the next latent is the sampler's job (DDPM, DDIM...), which is why samplers "
            "can be swapped without retraining.",
        },
    )


@register(
    "interview_training_inference",
    "Q5 training and inference: UNet evaluations for 50 steps with CFG (a number)",
    NOTEBOOK,
)
def check_training_inference(answer, trial: Trial) -> str:
    expect_number(
        "interview_training_inference",
        "1 (50 DDIM steps, classifier-free guidance, no batching)",
        answer,
        100,
        name="the number of UNet evaluations",
        rel=0,
        hint="classifier-free guidance needs two noise predictions per step: with the prompt and without.",
    )
    return "100 evaluations"


@register(
    "interview_performance",
    "Q6 performance: growth of the attention matrix from a 32x32 to a 64x64 latent (a number)",
    NOTEBOOK,
)
def check_performance(answer, trial: Trial) -> str:
    expect_number(
        "interview_performance",
        "1 (self-attention over 32 x 32 vs 64 x 64 latent positions)",
        answer,
        16,
        name="the growth factor",
        rel=0,
        hint="count the tokens (one per latent position) on both sides; the attention matrix is tokens x tokens.",
    )
    return "16x larger"


@register("interview_challenges", "Q7 real-world challenges (multiple choice)", NOTEBOOK)
def check_challenges(answer, trial: Trial) -> str:
    return _multiple_choice(
        "interview_challenges",
        answer,
        "abcde",
        {"a", "b", "c", "e"},
        {
            "a": "a model reproduces the statistics of its training data, including its skews.",
            "b": "see Carlini et al. 2023, 'Extracting training data from diffusion models'.",
            "c": "count the network evaluations per image, and compare with one forward pass of a GAN.",
            "d": "diffusion models compose concepts they have seen separately (the shapes world's held-out "
            "colour-shape pairs test exactly this); they are not limited to training compositions.",
            "e": "think of what text-to-image models are known for getting wrong in a picture: words and counts.",
        },
    )


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
