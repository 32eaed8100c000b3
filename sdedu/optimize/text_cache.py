"""Cached text embeddings: each distinct prompt goes through the (frozen) text encoder once."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from sdedu._checks import check_int_range
from sdedu.optimize.wrappers import ModuleWrapper, check_pipe, copy_pipeline


class CachedTextEncoder(ModuleWrapper):
    """Remembers the embedding of every token sequence it has encoded (least recently used first out).

    ids (B, L) -> cond (B, L, D): rows seen before come from the cache, the others are encoded
    together in one call and stored. Bypassed in training mode or when gradients are on.
    """

    def __init__(self, text_encoder: nn.Module, max_entries: int = 4096):
        super().__init__(text_encoder)
        self.max_entries = check_int_range("max_entries", max_entries, 1, 10**9)
        self.cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.module.training or torch.is_grad_enabled():
            return self.module(ids)
        keys = [tuple(row) for row in ids.tolist()]
        # 1. Encode the distinct rows not in the cache, in one batch.
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            fresh = self.module(torch.tensor(missing, dtype=ids.dtype, device=ids.device))  # (M, L, D)
            for key, row in zip(missing, fresh):
                self.cache[key] = row
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        # 2. Assemble the batch from the cache, marking the rows as recently used.
        rows = []
        for key in keys:
            self.cache.move_to_end(key)
            rows.append(self.cache[key].to(ids.device))
        while len(self.cache) > self.max_entries:
            self.cache.popitem(last=False)
        return torch.stack(rows)  # (B, L, D)

    def clear(self) -> None:
        self.cache.clear()
        self.hits = self.misses = 0


def cache_text_embeddings(pipe, prompts=None, max_entries: int = 4096):
    """The pipeline with a cache in front of its text encoder.

    Buys: a repeated prompt, and the empty prompt "" that every guided call encodes for the
    unconditional branch, skip the text encoder. Small here (the text encoder is a sliver of the
    cost of 25 UNet steps), large for Stable Diffusion served with popular prompts.
    Costs: memory, L x D x 4 bytes per cached prompt (3 KB here; 236 KB for SD's 77 x 768), and
    correctness only as long as the text encoder does not change (it is frozen).

    Args:
        pipe: a TinyStableDiffusion.
        prompts: optional prompts to encode now (e.g. every caption a notebook will use).
        max_entries: the most prompts kept; the least recently used go first.
    Returns:
        a new pipeline; `pipe` is unchanged. `new.text_encoder.hits / .misses` count lookups.
    """
    check_pipe(pipe)
    new = copy_pipeline(pipe, ("text_encoder",))
    new.text_encoder = CachedTextEncoder(new.text_encoder, max_entries)
    if prompts is not None:
        new.encode_prompt(prompts)
    return new
