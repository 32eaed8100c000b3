"""Checks for the interview questions Q1-Q7 (solutions/11_interview_questions.ipynb; Q8-Q10, which ask
for a little code or a mapping, are in `checks_interview_practice`).

Each question has a model answer in prose (in the notebook) and a checked part here: a set of letters
(multiple choice, possibly several right). Some choices are predictions that a cell of the notebook then
measures on the shipped model (Q2, Q5); some repeat a claim of the popular Q&A write-up the ten questions
come from, and their hints quote that claim and say why it is wrong (`seed_says`). Letters are
case-insensitive; an answer may be a string "ab", a list or a set. The hints point at the idea behind a
wrong choice, never at the letter.
"""

from __future__ import annotations

from sdedu.grading.errors import describe, fail
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


def multiple_choice(item: str, answer, valid: str, right: set[str], why: dict[str, str]) -> str:
    chosen = _letters(item, answer, valid)
    wrong = sorted(chosen - right)
    missing = sorted(right - chosen)
    if wrong:
        fail(item, "1 (the choices)", f"choice {wrong[0]!r} is not true.", why[wrong[0]])
    if missing:
        fail(item, "1 (the choices)", f"{len(missing)} true statement(s) not chosen.", why[missing[0]])
    return f"{len(right)} of {len(valid)} statements chosen, all true"


# The claims of the popular Q&A write-up on Stable Diffusion that the ten questions come from, quoted in the
# hints of the choices that repeat them (notebook 01 tests each one on the running model).
SEED_TEXTURES = "SD is a model for generating textures in computer graphics"
SEED_FORWARD = "forward diffusion starts from a given condition image"
SEED_TWO_PARTS = "SD = a stable diffusion process + an image generation network"


def seed_says(claim: str, why: str) -> str:
    """A hint for a choice that repeats the write-up's `claim`: the claim, named, and why it is wrong."""
    return f'the popular write-up says "{claim}", and that is wrong: {why}'


@register("interview_what_is_sd", "Q1 what Stable Diffusion is and where it is used (multiple choice)", NOTEBOOK)
def check_what_is_sd(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_what_is_sd",
        answer,
        "abcde",
        {"a", "c", "d"},
        {
            "a": "where does the UNet of Stable Diffusion work: on pixels, or on something smaller?",
            "b": seed_says(
                SEED_TEXTURES,
                "it is a latent text-to-image diffusion model that generates whole images (scenes, objects, "
                "layouts) from a prompt; a texture is one thing it can draw, and it learns a denoiser for the whole "
                "image distribution rather than pasting training patches.",
            ),
            "c": "img2img and inpainting reuse the text-to-image model: they start the reverse process from a noised "
            "image, or keep the known pixels at every step.",
            "d": "think of what happened after the weights were published in 2022 (DreamBooth, LoRA, ControlNet...).",
            "e": "generation needs only the weights: everything the model knows is in its parameters.",
        },
    )


@register(
    "interview_architecture",
    "Q2 architecture: which of the five parts hold trained parameters (predict, then count)",
    NOTEBOOK,
)
def check_architecture(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_architecture",
        answer,
        "abcde",
        {"a", "b", "c"},
        {
            "a": "the write-up's single 'image generation network' leaves out a trained network: the UNet never sees "
            "a pixel, something learned turns images into latents and latents back into images.",
            "b": "the prompt becomes vectors through a trained transformer (CLIP's text tower in SD v1), frozen "
            "while the UNet is trained.",
            "c": "which part predicts the noise at every step?",
            "d": seed_says(
                SEED_TWO_PARTS,
                "the noise process is fixed, not learned: beta_t comes from a formula (SD v1: scaled linear), so "
                "q(z_t | z_0) has no parameters at all.",
            ),
            "e": "a sampler turns noise predictions into steps with fixed formulas (DDPM, DDIM, ...); that is why it "
            "can be swapped without retraining.",
        },
    )


@register(
    "interview_diffusion_process",
    "Q3 the diffusion process: where the forward process starts and what it holds (multiple choice)",
    NOTEBOOK,
)
def check_diffusion_process(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_diffusion_process",
        answer,
        "abcde",
        {"b", "e"},
        {
            "a": seed_says(
                SEED_FORWARD,
                "the forward process q(x_t | x_0) starts from clean training data x_0 (for SD, the latent of a "
                "training image) and takes no condition; the prompt enters only the reverse process, through the "
                "UNet. (img2img starts the *sampling* from a noised input image, which is a different thing.)",
            ),
            "b": "what does q(x_t | x_0) take as its input?",
            "c": "pure noise x_T is where the *reverse* process (sampling) starts; the forward process ends there.",
            "d": "the forward process never sees the prompt: q_sample(x0, t, schedule, noise) has no condition "
            "argument.",
            "e": "x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, with alpha_bar_t from a fixed schedule: "
            "what in that formula could be learned?",
        },
    )


@register("interview_unet_role", "Q4 the generation network's role: what the UNet predicts (multiple choice)", NOTEBOOK)
def check_unet_role(answer, trial: Trial) -> str:
    return multiple_choice(
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


_FEWER_NOISE_HARDER = (
    "the eps-MSE keeps growing as t goes down: the less noise there is, the harder it is to say exactly which part "
    "of z_t is noise."
)


@register(
    "interview_training_inference",
    "Q5 training: at which timestep is the noise-prediction error largest (predict, then measure)",
    NOTEBOOK,
)
def check_training_inference(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_training_inference",
        answer,
        "abcde",
        {"a"},
        {
            "a": "how well can you tell a tiny amount of noise apart from the image it sits on?",
            "b": _FEWER_NOISE_HARDER,
            "c": _FEWER_NOISE_HARDER,
            "d": "at the last timestep z_t is almost pure noise, so predicting eps = z_t is nearly exact: the eps-MSE "
            "is smallest there. (The error on z_0 recovered from eps is the one that is largest at large t.)",
            "e": "the loss is a plain mean over random t; nothing normalises it per timestep, and the levels differ "
            "a lot in difficulty.",
        },
    )


@register(
    "interview_guidance_diversity",
    "Q5 inference: what a larger guidance scale does to the variety of the images (predict, then measure)",
    NOTEBOOK,
)
def check_guidance_diversity(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_guidance_diversity",
        answer,
        "abcd",
        {"b"},
        {
            "a": "guidance extrapolates away from the unconditional prediction, towards what the prompt makes most "
            "likely: does that widen or narrow the range of images?",
            "b": "what does eps_uncond + w (eps_cond - eps_uncond) do when w grows?",
            "c": "guidance changes the noise prediction at every step, so it changes the images, not just the time.",
            "d": "guidance with a scale other than 1 needs two UNet predictions per step (with and without the "
            "prompt), so it costs more, not less.",
        },
    )


@register(
    "interview_performance",
    "Q6 performance: which speed-ups leave the image unchanged (multiple choice)",
    NOTEBOOK,
)
def check_performance(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_performance",
        answer,
        "abcde",
        {"a", "b", "e"},
        {
            "a": "FlashAttention and scaled_dot_product_attention compute the same softmax(QK^T / sqrt(d)) V, in "
            "tiles, without storing the tokens x tokens matrix: exact up to rounding.",
            "b": "the conditional and unconditional predictions are independent: one call on a batch of two gives "
            "the same two results as two calls.",
            "c": "fewer steps means a coarser discretisation of the reverse process: a different (often nearly the "
            "same, not the same) image.",
            "d": "int8 weights round every weight to one of 256 levels: an approximation of the model, so the image "
            "changes a little.",
            "e": "the text encoder is deterministic: encoding the same prompt again gives the same vectors.",
        },
    )


@register("interview_challenges", "Q7 real-world challenges (multiple choice)", NOTEBOOK)
def check_challenges(answer, trial: Trial) -> str:
    return multiple_choice(
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
