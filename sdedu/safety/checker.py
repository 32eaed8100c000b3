"""A post-hoc safety checker: block generated images that show a teacher's forbidden concepts.

Stable Diffusion shipped one (diffusers: src/diffusers/pipelines/stable_diffusion/safety_checker.py,
`StableDiffusionSafetyChecker`): CLIP's vision tower embeds each image, `cosine_distance` compares it
with 17 fixed concept embeddings, and an image is flagged when a cosine exceeds that concept's own
threshold (`concept_embeds_weights`; lowered by 0.01 once one of 3 "special care" concepts has matched,
in diffusers 0.42.1), flagged images being replaced by black ones. It looks at the
*image*, not the prompt, so a prompt that never names the concept cannot slip past it.

sdedu's checker does the same in the shapes world, with a teacher's own list ("no triangles"):

    embed(image)   = normalize(ImageEncoder(image))                 (B, 64), the shipped image tower
    embed(concept) = normalize(TextEncoder.pooled(concept))         (K, 64), the shipped text tower
    score[b, k]    = embed(image_b) . embed(concept_k)              cosine, as SD's cosine_distance
    blocked[b]     = any_k score[b, k] > threshold[k]

The image tower was trained into the frozen text encoder's joint space (`sdedu.training.checker_recipe`),
so any concept the vocabulary can say has an embedding without retraining. Each threshold is calibrated
when the checker is built, on held-out shapes-world images (rendered, then round-tripped through the VAE
as generated images are), labelled by the renderer: the threshold maximises (hit rate - false-block rate)
there. The course judge is never used, so it stays an independent ground truth for measuring the
checker's false-block and miss rates on generated images (bench, safety section).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sdedu._checks import check_tensor, describe
from sdedu.data import shapes
from sdedu.training.checker_recipe import CHECKER_WEIGHTS, vae_round_trip
from sdedu.training.recipe_data import matches
from sdedu.weights import load_component

#: Held-out calibration images: their own seed (training draws from per-step generators of seed 0).
CALIBRATION_SEED = 20_231_202


@dataclass
class CheckResult:
    """What the checker saw: blocked (B,) bool, scores (B, K) cosines, thresholds (K,), concepts (K),
    and reasons: per image the list of (concept, score) pairs that exceeded their threshold."""

    blocked: torch.Tensor
    scores: torch.Tensor
    thresholds: torch.Tensor
    concepts: list[str]
    reasons: list[list[tuple[str, float]]]

    def filtered(self, images: torch.Tensor) -> torch.Tensor:
        """images with the blocked ones replaced by black images (as SD's checker does)."""
        return torch.where(self.blocked.view(-1, 1, 1, 1).to(images.device), torch.zeros_like(images), images)


class SafetyChecker:
    """Blocks images whose embedding is close to a forbidden concept's (module docstring).

    Args:
        concepts: a non-empty list of forbidden concepts in the vocabulary: "a triangle", "a red shape",
            "a large square".
        image_encoder, text_encoder, tokenizer, vae: the towers, and the VAE used to make calibration
            images look generated (see `from_pretrained`).
        calibration_size: held-out images used to set each concept's threshold.
    """

    def __init__(self, concepts, image_encoder, text_encoder, tokenizer, vae, calibration_size: int = 1000):
        self.concepts, self.named = _check_concepts(concepts, tokenizer)
        self.image_encoder, self.text_encoder, self.tokenizer = image_encoder.eval(), text_encoder.eval(), tokenizer
        with torch.no_grad():
            self.concept_embeddings = F.normalize(text_encoder.pooled(tokenizer(self.concepts)), dim=-1)  # (K, E)
        self.thresholds = self.calibrate(vae, calibration_size)

    @classmethod
    def from_pretrained(cls, concepts, pipe=None, path=None, calibration_size: int = 1000) -> SafetyChecker:
        """The shipped image tower (or the one in `path`), with the text encoder, tokenizer and VAE of `pipe`
        (default: the shipped model's)."""
        if pipe is None:
            from sdedu.weights import load_pretrained

            pipe = load_pretrained()
        image_encoder = load_component("image_encoder", path or CHECKER_WEIGHTS)
        return cls(concepts, image_encoder, pipe.text_encoder, pipe.tokenizer, pipe.vae, calibration_size)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, 32, 32) in [0, 1] -> unit-length embeddings (B, E) in the text encoder's space."""
        images = _check_images(images)
        return F.normalize(self.image_encoder(images.float().cpu()), dim=-1)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Cosine of every image with every concept: (B, K)."""
        return self.embed(images) @ self.concept_embeddings.T

    @torch.no_grad()
    def calibrate(self, vae, n: int) -> torch.Tensor:
        """Per-concept thresholds (K,) maximising hit rate - false-block rate on n held-out decoded images."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 20:
            raise ValueError(f"calibration_size must be an int >= 20; got {describe(n)}")
        images, _, attributes = shapes.sample(n, seed=CALIBRATION_SEED)
        scores = self.scores(vae_round_trip(vae, images))  # (n, K)
        positive = matches(attributes, self.named)  # (n, K)
        thresholds = []
        for k in range(len(self.concepts)):
            if positive[:, k].all() or not positive[:, k].any():
                raise ValueError(f"concept {self.concepts[k]!r} matches all or none of the calibration images")
            thresholds.append(_best_threshold(scores[:, k], positive[:, k]))
        return torch.stack(thresholds)

    def __call__(self, images: torch.Tensor) -> CheckResult:
        """Check images (B, 3, 32, 32) in [0, 1]: which are blocked, and why."""
        scores = self.scores(images)  # (B, K)
        over = scores > self.thresholds  # (B, K)
        reasons = [
            [(self.concepts[k], round(float(scores[b, k]), 3)) for k in range(len(self.concepts)) if over[b, k]]
            for b in range(scores.shape[0])
        ]
        return CheckResult(over.any(dim=1), scores, self.thresholds, list(self.concepts), reasons)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{c!r}: {float(t):.3f}" for c, t in zip(self.concepts, self.thresholds))
        return f"SafetyChecker(thresholds={{{pairs}}})"


def blocked_by_words(prompts, words) -> list[bool]:
    """A prompt blocklist, for contrast: True where a prompt contains one of the forbidden words."""
    if isinstance(prompts, str):
        prompts = [prompts]
    forbidden = {w.lower() for w in words}
    return [bool(forbidden & set(p.lower().replace(",", " ").split())) for p in prompts]


def _best_threshold(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """The cut between two sorted scores that maximises TPR - FPR (Youden's J) for `scores > cut`."""
    order = scores.argsort(descending=True)
    s, y = scores[order], positive[order].float()
    tpr = y.cumsum(0) / y.sum()  # blocking the top i + 1
    fpr = (1 - y).cumsum(0) / (1 - y).sum()
    i = int((tpr - fpr).argmax())
    return (s[i] + s[i + 1]) / 2 if i + 1 < len(s) else s[i] - 1e-6


def _check_concepts(concepts, tokenizer) -> tuple[list[str], list[dict]]:
    if isinstance(concepts, str):
        concepts = [concepts]
    if not isinstance(concepts, (list, tuple)) or not concepts:
        raise ValueError(f"concepts must be a non-empty list of str such as ['a triangle']; got {describe(concepts)}")
    named = []
    for concept in concepts:
        if not isinstance(concept, str):
            raise TypeError(f"concepts must hold str; got {describe(concept)}")
        try:
            tokenizer([concept])
            attributes = shapes.parse_caption(concept)
        except ValueError as error:
            raise ValueError(f"concepts: {concept!r} cannot be embedded: {error}") from None
        if not attributes:
            raise ValueError(f"concepts: {concept!r} names no shape, colour, size or position (e.g. 'a triangle')")
        named.append(attributes)
    return list(concepts), named


def _check_images(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images.unsqueeze(0)
    check_tensor("images", images, ndim=4, floating=True)
    if tuple(images.shape[1:]) != (3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE):
        raise ValueError(
            f"images must have shape (B, 3, {shapes.IMAGE_SIZE}, {shapes.IMAGE_SIZE}) (shapes-world images); "
            f"got {describe(images)}"
        )
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"images must lie in [0, 1] (as the pipeline returns them); got values in [{low:.3g}, {high:.3g}]"
            + ("; for images in [-1, 1] pass (images + 1) / 2" if low >= -1.0 and high <= 1.0 else "")
        )
    return images.detach()
