"""The tiny text encoder: prompt -> token ids -> per-token embeddings cond (B, L, D).

Stable Diffusion conditions its UNet on the last hidden states of CLIP's text transformer
(Radford et al. 2021), one D-dimensional vector per token, which the UNet reads through
cross-attention. sdedu does the same at toy scale:

1. `Tokenizer`: word-level over the shapes world's closed vocabulary
   (`sdedu.data.shapes.VOCABULARY`) plus three special tokens, padded to a fixed length L:
   "a red circle" -> [<start>, a, red, circle, <end>, <pad>, ...]. The empty prompt "" becomes
   [<start>, <end>, <pad>, ...]: its encoding is the *unconditional* embedding used by
   classifier-free guidance (as SD uses the encoding of "").
2. `TextEncoder`: token embedding + learned position embedding, a few pre-LayerNorm
   transformer layers, a final LayerNorm (CLIP's text tower, minus the causal mask: with a
   closed vocabulary and short prompts bidirectional attention is simpler and as good; padding
   keys are masked so <pad> never changes a real token's embedding).

How it is trained, and why (see `sdedu.training.recipes.train_text_encoder`): as in Stable
Diffusion, the text encoder is pretrained *contrastively* against an image encoder (CLIP's
objective, Radford et al. 2021, fig. 3) and then **frozen** while the UNet trains. Reasons:
- it mirrors Stable Diffusion, so the course can explain SD's text tower by running one;
- a frozen encoder gives every prompt a fixed embedding, so cached conditionings, guidance
  and cross-attention maps mean the same thing in every notebook;
- it costs under a minute, and it separates "understanding text" from "drawing".
Because a partial caption ("a red shape") matches many images, the contrastive targets are
multi-positive: every image in the batch that satisfies a caption counts as its match
(`ContrastiveModel.loss`), so the encoder is never pushed to tell apart equally-correct pairs.
Which words a caption names is still visible per token, so the UNet's cross-attention can pick
out "red" and "top left" directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_tensor, describe
from sdedu.data.shapes import VOCABULARY
from sdedu.nn.attention import SelfAttention

PAD, START, END = "<pad>", "<start>", "<end>"
SPECIAL_TOKENS = (PAD, START, END)
#: The special tokens' ids: they come first in every Tokenizer's table, in this order.
PAD_ID, START_ID, END_ID = (SPECIAL_TOKENS.index(token) for token in (PAD, START, END))


class Tokenizer:
    """Word-level tokenizer over a closed vocabulary, padded to `max_length` tokens.

    ids: the special tokens first (<pad> = PAD_ID = 0, <start> = START_ID = 1, <end> = END_ID = 2),
    then the vocabulary words in order.

    Args:
        vocabulary: the words (default: the shapes world's `VOCABULARY`).
        max_length: L, the fixed number of tokens per prompt, <start> and <end> included.

    Call it on a list of prompts (or one string) to get a LongTensor (B, L).
    Lower-cases, treats ",", "." and repeated spaces as word breaks. Unknown words raise a
    ValueError naming them and listing the vocabulary.
    """

    def __init__(self, vocabulary=VOCABULARY, max_length: int = 12):
        self.vocabulary = tuple(vocabulary)
        self.max_length = int(max_length)
        self.tokens = SPECIAL_TOKENS + self.vocabulary
        self.token_to_id = {token: i for i, token in enumerate(self.tokens)}
        self.pad_id, self.start_id, self.end_id = (self.token_to_id[token] for token in (PAD, START, END))

    def __len__(self) -> int:
        """Number of distinct ids (vocabulary + special tokens)."""
        return len(self.tokens)

    def split(self, prompt: str) -> list[str]:
        """The words of a prompt: lower-cased, split on spaces, commas and full stops."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str; got {describe(prompt)}")
        return [w for w in re.split(r"[\s,.]+", prompt.lower()) if w]

    def __call__(self, prompts, device="cpu") -> torch.Tensor:
        """prompts: str or list[str] -> ids (B, L) int64."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a str or a list of str; got {describe(prompts)}")
        ids = torch.full((len(prompts), self.max_length), self.pad_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = self.split(prompt)
            unknown = sorted({w for w in words if w not in self.token_to_id or w in SPECIAL_TOKENS})
            if unknown:
                raise ValueError(
                    f"prompt {prompt!r} has words outside the vocabulary: {unknown}; "
                    f"the vocabulary is: {', '.join(self.vocabulary)}"
                )
            if len(words) + 2 > self.max_length:
                raise ValueError(
                    f"prompt {prompt!r} has {len(words)} words; at most {self.max_length - 2} fit "
                    f"(max_length={self.max_length} includes <start> and <end>)"
                )
            # [<start>, words..., <end>, <pad>, ...]
            sequence = [self.start_id] + [self.token_to_id[w] for w in words] + [self.end_id]
            ids[row, : len(sequence)] = torch.tensor(sequence)
        return ids.to(device)

    def decode(self, ids: torch.Tensor) -> list[list[str]]:
        """ids (B, L) -> the tokens of each row, padding included (for labelling attention maps)."""
        return [[self.tokens[i] for i in row.tolist()] for row in ids]


@dataclass
class TextEncoderConfig:
    """Sizes of the tiny text encoder.

    vocab_size: number of token ids (the tokenizer's len).
    max_length: L, tokens per prompt (must equal the tokenizer's).
    width: D, the embedding width handed to the UNet's cross-attention.
    layers, num_heads: transformer depth and heads (head_dim = width // num_heads).
    embed_dim: width of the joint text-image space used only by contrastive pretraining.
    """

    vocab_size: int = len(SPECIAL_TOKENS) + len(VOCABULARY)
    max_length: int = 12
    width: int = 64
    layers: int = 2
    num_heads: int = 4
    embed_dim: int = 64


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer layer: x += SelfAttention(LN(x)); x += MLP(LN(x))."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, num_heads, width // num_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Token ids (B, L) -> per-token embeddings cond (B, L, D), CLIP-text-tower style.

    cond = LayerNorm(layers(token_embedding[ids] + position_embedding))

    Args:
        config: `TextEncoderConfig`.
    """

    def __init__(self, config: TextEncoderConfig | None = None):
        super().__init__()
        self.config = config or TextEncoderConfig()
        c = self.config
        self.token_embedding = nn.Embedding(c.vocab_size, c.width)
        self.position_embedding = nn.Parameter(torch.randn(c.max_length, c.width) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(c.width, c.num_heads) for _ in range(c.layers))
        self.final_norm = nn.LayerNorm(c.width)
        # Used only by contrastive pretraining: the <end> token's state -> the joint space.
        self.text_projection = nn.Linear(c.width, c.embed_dim, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) int64 from the Tokenizer -> cond (B, L, D)."""
        check_tensor("ids", ids, ndim=2)
        c = self.config
        if ids.dtype != torch.long or ids.shape[1] != c.max_length:
            raise ValueError(
                f"ids must be an int64 tensor of shape (B, {c.max_length}) from the Tokenizer; got {describe(ids)}"
            )
        if ids.numel() and (ids.min() < 0 or ids.max() >= c.vocab_size):
            raise ValueError(f"ids must lie in [0, {c.vocab_size}); got values in [{int(ids.min())}, {int(ids.max())}]")
        # 1. Embed tokens and positions.
        x = self.token_embedding(ids) + self.position_embedding  # (B, L, D)
        # 2. Transformer layers; padding keys are masked out.
        mask = ids != PAD_ID  # (B, L) True for real tokens
        for layer in self.layers:
            x = layer(x, mask)
        # 3. Final LayerNorm: these per-token states are SD's "last_hidden_state".
        return self.final_norm(x)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """One vector per prompt (B, embed_dim): the <end> token's state, projected (as in CLIP)."""
        states = self(ids)  # (B, L, D)
        end = (ids == END_ID).float().argmax(dim=1)  # (B,) position of <end>
        return self.text_projection(states[torch.arange(ids.shape[0]), end])  # (B, embed_dim)


@dataclass
class ImageEncoderConfig:
    """Sizes of the image tower: embed_dim (the joint space's width), channels (the first conv's)."""

    embed_dim: int = 64
    channels: int = 32


class ImageEncoder(nn.Module):
    """A tiny CNN image tower for contrastive pretraining: (B, 3, 32, 32) -> (B, embed_dim).

    It flattens the 4x4 feature map instead of pooling it, so *where* the shape is survives.
    (`sdedu.safety.checker` ships one, trained against the frozen text tower, as its image embedding.)
    """

    def __init__(self, config: ImageEncoderConfig | None = None):
        super().__init__()
        self.config = config or ImageEncoderConfig()
        embed_dim, channels = self.config.embed_dim, self.config.channels
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1),
            nn.SiLU(),  # 16x16
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
            nn.SiLU(),  # 8x8
            nn.Conv2d(2 * channels, 2 * channels, 3, stride=2, padding=1),
            nn.SiLU(),  # 4x4
            nn.Flatten(),  # (B, 2 * channels * 16)
            nn.Linear(2 * channels * 16, embed_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * 2.0 - 1.0)


class ContrastiveModel(nn.Module):
    """Text and image towers trained with a multi-positive CLIP loss (Radford et al. 2021).

    logits = exp(logit_scale) * normalize(image_emb) @ normalize(text_emb)^T      (B, B)
    loss = (CE(logits rows, image->text targets) + CE(logits columns, text->image targets)) / 2
    where the targets spread each row's probability evenly over *all* matching pairs
    (match[i, j] = image i satisfies caption j); CLIP's targets are the identity matrix.
    """

    def __init__(self, text_encoder: TextEncoder, image_channels: int = 32):
        super().__init__()
        self.text_encoder = text_encoder
        self.image_encoder = ImageEncoder(ImageEncoderConfig(text_encoder.config.embed_dim, image_channels))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), CLIP's initial value

    def loss(self, images: torch.Tensor, ids: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        """images (B, 3, 32, 32), ids (B, L), match (B, B) bool -> scalar loss."""
        # 1. Unit-length embeddings from both towers.
        image_emb = F.normalize(self.image_encoder(images), dim=-1)  # (B, E)
        text_emb = F.normalize(self.text_encoder.pooled(ids), dim=-1)  # (B, E)
        # 2. Scaled cosine similarities of every image with every caption.
        logits = self.logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T  # (B images, B captions)
        # 3. Soft targets: each row (column) spread over all matching captions (images).
        match = match.float()
        image_to_text = match / match.sum(dim=1, keepdim=True)
        text_to_image = (match / match.sum(dim=0, keepdim=True)).T
        loss_i = torch.sum(-image_to_text * logits.log_softmax(dim=1), dim=1).mean()
        loss_t = torch.sum(-text_to_image * logits.T.log_softmax(dim=1), dim=1).mean()
        return (loss_i + loss_t) / 2
