"""Checks for the interview questions Q1-Q7 (solutions/11_interview_questions.ipynb; Q8-Q10, which ask
for a little code or a mapping, are in `checks_interview_practice`).

Each question has a model answer in prose (in the notebook) and one part that is checked here:
a set of letters (multiple choice, possibly several right), a number to compute, a mapping, or a
small function. Letters are case-insensitive; a multiple-choice answer may be a string "ab", a
list or a set. The hints point at the idea behind a wrong choice, never at the letter.
"""

from __future__ import annotations

from sdedu.grading.errors import describe, fail
from sdedu.grading.expect import expect_number
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial

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
