"""Checks for interview question 7's safety, provenance and privacy parts (solutions/11_interview_questions.ipynb).

Q7 asks for the real-world challenges of Stable Diffusion (`checks_interview.check_challenges`); these three
items go into three of them, as notebook 21 ("Safety, provenance and privacy") does:

- memorisation (predict, then measure): the extraction attack on the shipped model and on the same recipe
  trained on 32 images (`sdedu.safety.memorisation`);
- provenance (predict, then measure): what the metadata of a generated PNG survives (`sdedu.viz.provenance`);
- what the safeguards Stable Diffusion and diffusers shipped can and cannot guarantee (multiple choice).

The answer keys of the first two are what the shipped models measure (tests/test_interview_safety.py).
"""

from __future__ import annotations

from sdedu.grading.checks_interview import NOTEBOOK, multiple_choice
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial


@register(
    "interview_memorisation",
    "Q7 privacy: which model regurgitates its training images (predict, then measure)",
    NOTEBOOK,
)
def check_memorisation(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_memorisation",
        answer,
        "abcd",
        {"a", "d"},
        {
            "a": "a network that sees the same 32 images a thousand times can store them: are its samples closer to "
            "one training image than a new drawing of the same caption would be?",
            "b": "the shipped model saw about 75 images of every caption, each a little different: does it have a "
            "reason to reproduce one of them rather than draw a new one?",
            "c": "in the shapes world every caption has many training images a fraction of a pixel apart, so a fresh "
            "image that no model made has a near-twin too: closeness alone is no proof; compare with a control.",
            "d": "the two models share architecture, recipe and steps; only the number of distinct training images "
            "differs (Carlini et al. 2023 find duplicated images are the ones extracted).",
        },
    )


@register(
    "interview_provenance",
    "Q7 provenance: what the metadata of a generated PNG does and does not survive (predict, then measure)",
    NOTEBOOK,
)
def check_provenance(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_provenance",
        answer,
        "abcde",
        {"a", "c", "e"},
        {
            "a": "the fields are text chunks of the file: reading the file back reads them.",
            "b": "the metadata lives in text chunks beside the pixels; a program that copies only the pixels (a "
            "screenshot, most re-encoders, an upload pipeline) writes a file without them.",
            "c": "the text chunks are not signed: anyone can rewrite a field and the file still reads as valid "
            "(C2PA signs its manifest for that reason).",
            "d": "metadata is stripped by a re-save: its absence tells you nothing about where an image came from.",
            "e": "the sampler is deterministic given the seed, and the fields name the prompt, the seed, the sampler, "
            "the steps, the guidance and the weights' hash: everything generation depends on.",
        },
    )


@register(
    "interview_safeguards",
    "Q7 safeguards: what a safety checker, an invisible watermark and C2PA can guarantee (multiple choice)",
    NOTEBOOK,
)
def check_safeguards(answer, trial: Trial) -> str:
    return multiple_choice(
        "interview_safeguards",
        answer,
        "abcde",
        {"a", "c"},
        {
            "a": "read diffusers' StableDiffusionSafetyChecker: CLIP image embeddings against fixed concept "
            "embeddings, after generation; and the pipeline takes safety_checker=None.",
            "b": "the DWT-DCT watermark of SD's scripts and SDXL is a fixed 48-bit message in the pixels: it is "
            "weakened by resizing, cropping and re-encoding, and a missing mark proves nothing.",
            "c": "a C2PA manifest carries a signature over the claim and a hash of the content: editing either "
            "breaks it, but nothing stops someone from deleting the manifest.",
            "d": "the model draws what the text encoder's vectors point at, not the words: a paraphrase ('a shape "
            "with three corners') reaches the same concept past a list of words.",
            "e": "whoever holds the weights can fine-tune them: an erased concept can be taught back, and "
            "erasure methods have been circumvented by searching for new prompts.",
        },
    )
