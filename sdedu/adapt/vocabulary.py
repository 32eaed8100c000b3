"""New words for a frozen text encoder: the tokenizer grows, the embedding table gains rows.

Textual inversion (Gal et al. 2023, "An Image is Worth One Word", section 3) adds a pseudo-word S*
to the vocabulary and gives it one new row v* of the token-embedding table; every other weight,
the old rows included, stays as it was. Here the new words are appended after the old ones, so every
old word keeps its id, and a prompt made of old words encodes bit for bit as before.

    new_words(tokenizer, captions, words)       which words the captions add (checked)
    extend_text_encoder(tokenizer, text_encoder, words, seed)
                                                -> (tokenizer', text_encoder'), copies; v* initialised
                                                   as the mean word row plus seeded noise of the rows' spread
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from sdedu._checks import describe
from sdedu.models.text_encoder import SPECIAL_TOKENS, TextEncoder, Tokenizer

__all__ = ["new_words", "extend_text_encoder"]


def new_words(tokenizer: Tokenizer, captions: Sequence[str], words: Sequence[str] | None = None) -> tuple[str, ...]:
    """The new words the captions teach, in order of first use.

    Args:
        tokenizer: the pipeline's tokenizer (its vocabulary is what the model knows).
        captions: the captions of the teaching images.
        words: the new words, or None to take every caption word outside the vocabulary.
    Raises:
        ValueError naming `words` when one is already in the vocabulary (or a special token), or
        naming `captions` when a caption uses a word that is neither known nor new, or no caption
        uses a new word.
    """
    used = [w for caption in captions for w in tokenizer.split(caption)]
    known = set(tokenizer.vocabulary) | set(SPECIAL_TOKENS)
    if words is None:
        words = list(dict.fromkeys(w for w in used if w not in known))
    else:
        if isinstance(words, str) or not all(isinstance(w, str) for w in words):
            raise TypeError(f"words must be a list of str (the new words); got {describe(words)}")
        words = list(dict.fromkeys(w.lower() for w in words))
        colliding = [w for w in words if w in known]
        if colliding:
            raise ValueError(
                f"words must be new: {colliding} already in the vocabulary; a new word needs a name the "
                f"model does not know (the vocabulary: {', '.join(tokenizer.vocabulary)})"
            )
        stray = sorted({w for w in used if w not in known and w not in words})
        if stray:
            raise ValueError(f"captions use words that are neither in the vocabulary nor in words: {stray}")
    if not words:
        raise ValueError("captions must use at least one new word (a word outside the vocabulary); none does")
    unused = [w for w in words if w not in used]
    if unused:
        raise ValueError(f"words {unused} appear in no caption: captions must use every new word")
    return tuple(words)


@torch.no_grad()
def extend_text_encoder(
    tokenizer: Tokenizer, text_encoder: TextEncoder, words: Sequence[str], seed: int = 0
) -> tuple[Tokenizer, TextEncoder]:
    """Copies of the tokenizer and text encoder that know `words` too (the inputs are not changed).

    The new rows v* (k, D) start at the mean of the vocabulary's word rows plus Gaussian noise with
    their per-dimension spread (seeded): near the words the model knows, and distinct from each
    other, so a LoRA alone can tell them apart. The copy is frozen (requires_grad False everywhere).

    Returns:
        tokenizer' (old ids unchanged, the words appended) and text_encoder' (vocab_size + k rows).
    """
    old = text_encoder.token_embedding.weight  # (V, D)
    rows = old[len(SPECIAL_TOKENS) :]  # the word rows, (V - 3, D)
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(len(words), old.shape[1], generator=generator).to(old)
    fresh = rows.mean(dim=0) + noise * rows.std(dim=0)  # (k, D)
    tokenizer = Tokenizer(tokenizer.vocabulary + tuple(words), max_length=tokenizer.max_length)
    encoder = copy.deepcopy(text_encoder).requires_grad_(False)
    encoder.config = dataclasses.replace(encoder.config, vocab_size=len(tokenizer))
    encoder.token_embedding = nn.Embedding.from_pretrained(torch.cat([old, fresh]), freeze=True)
    return tokenizer, encoder
