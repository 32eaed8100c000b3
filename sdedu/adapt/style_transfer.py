"""SDEdit as style transfer: keep an image's layout, take the new prompt's look, and the strength between.

SDEdit (Meng et al. 2022; `TinyStableDiffusion.img2img`) noises an image part of the way along the
chain and denoises it towards a new prompt. What survives the noise is what the noise does not
wash out first: coarse layout (where the shape is, how big) outlives fine detail. So with a prompt
that asks for another colour and another shape, `strength` trades one for the other:

    content kept     the judged position and size are the source image's
    prompt followed  the judged colour and shape are the new prompt's

`sdedit_sweep` measures both over a range of strengths, on rendered shapes-world images whose new
prompt names a different colour and a different shape ("a blue square" for a red circle):
strength 0 gives back the (VAE-reconstructed) source, strength 1 is text-to-image that ignores it.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range, describe
from sdedu.data import shapes
from sdedu.metrics import judge

__all__ = ["STRENGTHS", "restyle_prompts", "sdedit_sweep"]

STRENGTHS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def restyle_prompts(n: int, seed: int = 0) -> tuple[torch.Tensor, list[dict], list[str], list[dict]]:
    """n rendered source images and, for each, a prompt naming another colour and another shape.

    Returns images (n, 3, 32, 32), their attributes, the prompts ("a blue square") and the
    attributes the prompts ask for. Held-out (colour, shape) pairs are avoided on both sides.
    """
    n = check_int_range("n", n, 1, 10_000)
    g = torch.Generator().manual_seed(seed)
    sources = shapes.sample_attributes(n, g, exclude_held_out=True)
    prompts, asked = [], []
    for source in sources:
        pairs = [
            (c, s)
            for c in shapes.COLORS
            for s in shapes.SHAPES
            if c != source["color"] and s != source["shape"] and (c, s) not in shapes.HELD_OUT
        ]
        color, shape = pairs[int(torch.randint(len(pairs), (1,), generator=g))]
        prompts.append(f"a {color} {shape}")
        asked.append({"color": color, "shape": shape})
    return shapes.render(sources, generator=g), sources, prompts, asked


def _share(verdicts: list[dict], wanted: list[dict], keys: tuple[str, ...]) -> float:
    """The share of images whose judged `keys` all equal the wanted ones."""
    return sum(all(v[k] == w[k] for k in keys) for v, w in zip(verdicts, wanted)) / len(wanted)


def sdedit_sweep(pipe, n: int = 32, strengths=STRENGTHS, seed: int = 0, **kwargs) -> dict:
    """Content kept and prompt followed by img2img at each strength (see the module docstring).

    Args:
        pipe: a TinyStableDiffusion.
        n: source images (each with its own new prompt).
        strengths: the strengths swept, each in [0, 1].
        seed: the sources, the prompts and img2img's noise.
        kwargs: passed to `pipe.img2img` (num_inference_steps, guidance_scale, ...).
    Returns:
        {"strength": [...], "content_kept": [...], "prompt_followed": [...], "position": [...],
         "size": [...], "color": [...], "shape": [...], "n": n, "examples": {strength: images (4, 3, 32, 32)},
         "sources": images (4, 3, 32, 32), "prompts": the first 4 prompts}
    """
    if isinstance(strengths, (str, bytes)) or not hasattr(strengths, "__iter__"):
        raise TypeError(f"strengths must be a list of numbers in [0, 1]; got {describe(strengths)}")
    images, sources, prompts, asked = restyle_prompts(n, seed)
    result = {k: [] for k in ("strength", "content_kept", "prompt_followed", "position", "size", "color", "shape")}
    result.update(n=n, examples={}, sources=images[:4], prompts=prompts[:4])
    for strength in strengths:
        out = pipe.img2img(images, prompts, strength=strength, seed=seed, **kwargs).cpu()
        verdicts = judge(out)
        result["strength"].append(float(strength))
        result["content_kept"].append(_share(verdicts, sources, ("position", "size")))
        result["prompt_followed"].append(_share(verdicts, asked, ("color", "shape")))
        for key in ("position", "size"):
            result[key].append(_share(verdicts, sources, (key,)))
        for key in ("color", "shape"):
            result[key].append(_share(verdicts, asked, (key,)))
        result["examples"][float(strength)] = out[:4]
    return result
