"""The recipe's training data: shapes-world images and partial captions, and which caption fits which image.

Images are drawn fresh for every step from the step's generator, with the held-out (colour, shape)
pairs excluded. Captions are full with probability `p_full`, otherwise each attribute is dropped
independently with probability `p_drop`, so partial prompts ("a red shape") are learnt with every
shape equally often. `matches` gives the contrastive targets of the text encoder: a partial
caption fits every image that has the attributes it names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdedu.data import shapes


def captions_for(attributes: list[dict], generator: torch.Generator, p_full: float, p_drop: float):
    """Full captions with probability p_full, else each attribute dropped with probability p_drop.

    Returns the captions and, per caption, the dict of attributes it still names.
    """
    n = len(attributes)
    full = torch.rand(n, generator=generator) < p_full  # (n,)
    drops = torch.rand(n, len(shapes.ATTRIBUTES), generator=generator) < p_drop  # (n, 4)
    captions, named = [], []
    for i, item in enumerate(attributes):
        drop = [] if full[i] else [a for a, d in zip(shapes.ATTRIBUTES, drops[i].tolist()) if d]
        captions.append(shapes.caption(item, drop=drop))
        named.append({a: item[a] for a in shapes.ATTRIBUTES if a not in drop})
    return captions, named


@dataclass
class LatentBank:
    """Training images encoded once by the frozen VAE: the latent denoisers (UNet, MM-DiT, ControlNet) draw from it.

    means, stds: (N, 4, 8, 8) of each image's latent Gaussian; attributes: N dicts; scale: the VAE's scale_factor.
    """

    means: torch.Tensor
    stds: torch.Tensor
    attributes: list[dict]
    scale: float

    def batch(self, batch_size: int, generator: torch.Generator, p_full: float, p_drop: float, p_uncond: float):
        """One training batch: (index (B,), z0 (B, 4, 8, 8), B captions with "" where dropped for guidance).

        z0 = scale_factor * (mean + std * noise) of random bank images (a fresh latent sample each time);
        captions full or partial (`captions_for`), then each replaced by "" with probability p_uncond.
        """
        index = torch.randint(len(self.attributes), (batch_size,), generator=generator)
        noise = torch.randn(self.means[index].shape, generator=generator).to(self.means.device)
        z0 = self.scale * (self.means[index] + self.stds[index] * noise)
        captions, _ = captions_for([self.attributes[i] for i in index.tolist()], generator, p_full, p_drop)
        uncond = (torch.rand(len(captions), generator=generator) < p_uncond).tolist()
        return index, z0, ["" if u else c for c, u in zip(captions, uncond)]


def _codes(items: list[dict]) -> torch.Tensor:
    """(n, 4) integer code of each attribute (index into SHAPES, COLORS, ...), -1 where absent."""
    tables = (shapes.SHAPES, shapes.COLORS, shapes.SIZES, shapes.POSITIONS)
    return torch.tensor(
        [[table.index(item[a]) if a in item else -1 for a, table in zip(shapes.ATTRIBUTES, tables)] for item in items]
    )


def matches(attributes: list[dict], named: list[dict]) -> torch.Tensor:
    """match[i, j] = image i has every attribute caption j names: (n images, m captions) bool."""
    image, caption = _codes(attributes), _codes(named)  # (n, 4), (m, 4)
    agree = (caption[None, :, :] == -1) | (caption[None, :, :] == image[:, None, :])  # (n, m, 4)
    return agree.all(dim=-1)


def draw_images(n: int, generator: torch.Generator):
    """n training images (held-out pairs excluded) and their attributes."""
    attributes = shapes.sample_attributes(n, generator, exclude_held_out=True)
    return shapes.render(attributes, generator=generator), attributes


def bank_images(n: int, seed: int, batch_size: int = 500):
    """The n images of a latent bank (`parts.encode_bank`), in batches: yields (images, attributes) per batch.

    The one place a bank's images are drawn, so that they can be drawn again (e.g. to compare a model's
    samples with the exact images it was trained on, `sdedu.safety.memorisation`).
    """
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch_size):
        yield draw_images(min(batch_size, n - start), generator)
