"""Knowledge enhancement: prompts with words the model never saw, expanded into words it knows.

The tiny model knows 20 words. Ask it for "a tomato" and its tokenizer refuses; a bigger model
would map the word to sub-word pieces it half knows and guess. Knowledge-enhanced text-to-image
systems (ERNIE-ViLG 2.0, Feng et al. 2023, adds "fine-grained textual and visual knowledge of key
elements in the scene", its abstract; DALL-E 3 as served has a language model rewrite the prompt first,
"prompt transformation" in Azure OpenAI's DALL-E 3 documentation) instead bring in what is *known*
about the word. Here that is a small, inspectable knowledge base: one sentence per fact,
"a tomato is a red circle", read with the shapes world's own caption parser, so every fact is a partial caption.

    kb = KnowledgeBase()                      # FACTS below
    kb.expand("a large tomato in the top left")     -> "a large red circle in the top left"
    kb.without("a large tomato in the top left")    -> "a large shape in the top left"  (unknown word ignored)
    kb.attributes("a green tomato")           -> {"color": "green", "shape": "circle"}  (the prompt's own words win)

And retrieval, as retrieval-augmented diffusion does (Blattmann et al. 2022, "Semi-Parametric Neural
Image Synthesis", abstract: nearest neighbours from a database, retrieved via CLIP, whose joint
image-text space lets a text prompt query it): `retrieve(pipe, prompt, k)` ranks the shapes world's
180 full captions by the cosine similarity of their text-encoder embeddings (mean over the prompt's
tokens) with the expanded prompt's, and renders their images.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch

from sdedu._checks import check_int_range, describe
from sdedu.data import shapes
from sdedu.metrics import adherence

__all__ = [
    "FACTS",
    "KnowledgeBase",
    "Retrieved",
    "retrieve",
    "caption_database",
    "knowledge_prompts",
    "measure_knowledge",
]

#: The knowledge base: "a(n) WORD is <a partial caption of the shapes world>", one fact per word.
FACTS = (
    "a tomato is a red circle",
    "a cherry is a small red circle",
    "a ruby is red",
    "a strawberry is a red triangle",
    "an emerald is green",
    "a lime is a green circle",
    "a pea is a small green circle",
    "a sapphire is blue",
    "a lemon is a yellow circle",
    "a sun is a large yellow circle",
    "a plum is a magenta circle",
    "an amethyst is magenta",
    "a turquoise is cyan",
    "a sail is a triangle",
    "a tent is a triangle",
    "a pyramid is a large triangle",
    "a box is a square",
    "a die is a small square",
    "a window is a square",
    "a coin is a small circle",
)

_FACT = re.compile(r"^an? ([a-z]+) is (.+)$")


def _words(prompt) -> list[str]:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str; got {describe(prompt)}")
    return [w for w in re.split(r"[\s,.]+", prompt.lower()) if w]


def _say(attributes: dict) -> str:
    """The caption naming exactly `attributes` (a partial dict), in the shapes world's word order."""
    full = {"shape": "circle", "color": "red", "size": "small", "position": "center", **attributes}
    return shapes.caption(full, drop=[a for a in shapes.ATTRIBUTES if a not in attributes])


class KnowledgeBase:
    """Facts about words the model never saw, each a partial set of shapes-world attributes.

    Args:
        facts: sentences "a WORD is <partial caption>" (default FACTS); WORD must not be a word the
            model knows, the caption must name one attribute at least.
    Attributes:
        facts: {word: attributes}, e.g. {"tomato": {"color": "red", "shape": "circle"}, ...}.
    """

    def __init__(self, facts=FACTS):
        if isinstance(facts, str) or not isinstance(facts, (list, tuple)) or not facts:
            raise TypeError(f"facts must be a non-empty list of sentences 'a WORD is ...'; got {describe(facts)}")
        known = set(shapes.VOCABULARY + shapes.CONCEPT_VOCABULARY)
        self.facts: dict[str, dict] = {}
        for sentence in facts:
            match = _FACT.match(sentence.strip().lower()) if isinstance(sentence, str) else None
            if match is None:
                raise ValueError(f"facts must be sentences 'a WORD is <caption>'; got {sentence!r}")
            word, said = match.groups()
            if word in known:
                raise ValueError(f"fact {sentence!r}: {word!r} is already a word of the model's vocabulary")
            if word in self.facts:
                raise ValueError(f"fact {sentence!r}: {word!r} has a fact already: {self.facts[word]}")
            attributes = shapes.parse_caption(said)
            if not attributes:
                raise ValueError(f"fact {sentence!r} names no attribute (shape, colour, size or position)")
            self.facts[word] = attributes

    def __len__(self) -> int:
        return len(self.facts)

    def __repr__(self) -> str:
        return f"KnowledgeBase({len(self)} facts: {', '.join(self.facts)})"

    def split(self, prompt: str) -> tuple[dict, list[str]]:
        """The attributes the prompt's known words name, and its words the model does not know."""
        words = _words(prompt)
        known = set(shapes.VOCABULARY + shapes.CONCEPT_VOCABULARY)
        unknown = [w for w in words if w not in known]
        missing = sorted({w for w in unknown if w not in self.facts and w != "an"})
        if missing:
            raise ValueError(
                f"prompt {prompt!r} has words neither the model nor the knowledge base knows: {missing}; "
                f"the knowledge base knows: {', '.join(self.facts)}"
            )
        return shapes.parse_caption(" ".join(w for w in words if w in known)), [w for w in unknown if w != "an"]

    def attributes(self, prompt: str) -> dict:
        """What the prompt means: the facts of its unknown words, overridden by its own words ("a green tomato")."""
        own, unknown = self.split(prompt)
        meant: dict = {}
        for word in unknown:
            meant.update(self.facts[word])
        return {**meant, **own}

    def expand(self, prompt: str) -> str:
        """The prompt in the model's words: "a tomato in the center" -> "a red circle in the center"."""
        return _say(self.attributes(prompt))

    def without(self, prompt: str) -> str:
        """The prompt as a model without the knowledge reads it: the unknown words ignored ("a shape ...")."""
        return _say(self.split(prompt)[0])


def caption_database(concepts: bool = False) -> tuple[list[str], list[dict]]:
    """Every full caption of the shapes world (180; 280 with orange and diamond) and its attributes."""
    shape_names = shapes.SHAPES + (shapes.CONCEPT_SHAPES if concepts else ())
    colors = shapes.COLORS + (shapes.CONCEPT_COLORS if concepts else ())
    attributes = [
        {"shape": s, "color": c, "size": z, "position": p}
        for s, c, z, p in itertools.product(shape_names, colors, shapes.SIZES, shapes.POSITIONS)
    ]
    return [shapes.caption(a) for a in attributes], attributes


@dataclass
class Retrieved:
    """The k nearest captions: captions (k str), attributes (k dicts), similarity (k,), images (k, 3, 32, 32)."""

    query: str
    captions: list[str]
    attributes: list[dict]
    similarity: torch.Tensor
    images: torch.Tensor


@torch.no_grad()
def _embed(pipe, prompts: list[str]) -> torch.Tensor:
    """Mean text-encoder embedding over each prompt's tokens (<start> to <end>), unit length: (B, D)."""
    ids = pipe.tokenizer(prompts, device=pipe.device)  # (B, L)
    tokens = pipe.text_encoder(ids)  # (B, L, D)
    keep = (ids != pipe.tokenizer.pad_id).unsqueeze(-1).to(tokens.dtype)  # (B, L, 1)
    pooled = (tokens * keep).sum(dim=1) / keep.sum(dim=1)
    return torch.nn.functional.normalize(pooled, dim=-1).cpu()


def retrieve(pipe, prompt: str, k: int = 4, knowledge: KnowledgeBase | None = None, seed: int = 0) -> Retrieved:
    """The k captions of the shapes world nearest to the prompt (expanded by `knowledge` first), with images.

    Args:
        pipe: a TinyStableDiffusion; its tokenizer and text encoder embed the captions.
        prompt: a str; words outside the model's vocabulary are expanded by `knowledge` (default: FACTS).
        k: how many neighbours, 1 to 180.
        seed: the renderer's jitter for the neighbours' images.
    """
    knowledge = KnowledgeBase() if knowledge is None else knowledge
    if not isinstance(knowledge, KnowledgeBase):
        raise TypeError(f"knowledge must be a KnowledgeBase; got {describe(knowledge)}")
    captions, attributes = caption_database()
    k = check_int_range("k", k, 1, len(captions))
    query = knowledge.expand(prompt)
    similarity = _embed(pipe, captions) @ _embed(pipe, [query])[0]  # (180,)
    best = similarity.topk(k)
    chosen = [attributes[i] for i in best.indices.tolist()]
    images = shapes.render(chosen, generator=torch.Generator().manual_seed(seed))
    return Retrieved(query, [captions[i] for i in best.indices.tolist()], chosen, best.values, images)


def knowledge_prompts(knowledge: KnowledgeBase | None = None) -> list[str]:
    """Two prompts per fact: "a tomato", then "a tomato in the {position}" (positions in turn)."""
    words = list((KnowledgeBase() if knowledge is None else knowledge).facts)
    placed = [f"a {w} in the {shapes.POSITIONS[i % len(shapes.POSITIONS)]}" for i, w in enumerate(words)]
    return [f"a {w}" for w in words] + placed


def measure_knowledge(generate, prompts: list[str], knowledge: KnowledgeBase | None = None) -> dict:
    """Judge adherence to what the prompts mean, generated without the knowledge and with it.

    Args:
        generate: generate(prompts) -> images (B, 3, 32, 32) (e.g. `lambda p: pipe(p, seed=0)`).
        prompts: prompts with words the model never saw (e.g. `knowledge_prompts()`).
    Returns:
        {"without": adherence, "with": adherence, "meant": [attributes], "images": {"without", "with"}}:
        "without" generates `knowledge.without(p)` (the unknown word ignored), "with" `knowledge.expand(p)`;
        both are scored against `knowledge.attributes(p)`, with the same seeds.
    """
    knowledge = KnowledgeBase() if knowledge is None else knowledge
    meant = [knowledge.attributes(p) for p in prompts]
    result: dict = {"meant": meant, "images": {}}
    for name, said in (("without", knowledge.without), ("with", knowledge.expand)):
        images = generate([said(p) for p in prompts])
        result[name] = adherence(images, meant)
        result["images"][name] = images
    return result
