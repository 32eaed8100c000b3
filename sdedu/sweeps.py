"""Sweeps of one sampling setting, scored by the shapes judge (`sdedu.metrics`).

- `guidance_sweep(pipe, prompts, scales)`: prompt adherence and diversity at each
  classifier-free guidance scale; `plot_guidance_sweep` draws the trade-off.
- `sampling_sweep(pipe, prompts, steps)`: seconds and adherence for each number of sampler steps.

The same prompts and seeds are used at every setting, so only the setting differs.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch

from sdedu import metrics

__all__ = ["guidance_sweep", "plot_guidance_sweep", "sampling_sweep"]


def _generate(pipe, prompts, batch_size: int, **kwargs) -> torch.Tensor:
    """pipe(...) over prompts in batches; batch i uses seed + i so batches differ."""
    seed = kwargs.pop("seed", 0)
    return torch.cat(
        [pipe(prompts[i : i + batch_size], seed=seed + i, **kwargs) for i in range(0, len(prompts), batch_size)]
    )


def guidance_sweep(
    pipe, prompts, scales, seed: int = 0, num_inference_steps: int = 25, attribute: str = "shape", batch_size: int = 100
) -> list[dict]:
    """Adherence and diversity of the same prompts and seeds at each guidance scale w.

    eps = eps_uncond + w (eps_cond - eps_uncond)   (sdedu.guidance; w = 1 is no guidance)

    Args:
        pipe: a `TinyStableDiffusion`.
        prompts: the prompts (repeat a prompt to get several images of it).
        scales: guidance scales to try.
        attribute: the judged attribute whose spread is reported as diversity.
    Returns:
        one dict per scale: guidance_scale, adherence (`sdedu.metrics.adherence`), diversity
        (`sdedu.metrics.diversity` of `attribute`) and images (B, 3, 32, 32).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    rows = []
    for scale in scales:
        images = _generate(
            pipe, prompts, batch_size, seed=seed, guidance_scale=float(scale), num_inference_steps=num_inference_steps
        )
        verdicts = metrics.judge(images)
        rows.append(
            {
                "guidance_scale": float(scale),
                "adherence": metrics.adherence(verdicts, prompts),
                "diversity": metrics.diversity(verdicts, attribute),
                "images": images,
            }
        )
    return rows


def plot_guidance_sweep(rows: list[dict], adherence_key: str = "all", size: float = 4.0) -> plt.Figure:
    """Adherence (left axis) and normalised diversity entropy (right axis) against the guidance scale."""
    scales = [r["guidance_scale"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.4 * size, 0.8 * size))
    ax.plot(
        scales,
        [r["adherence"][adherence_key] for r in rows],
        "o-",
        color="tab:blue",
        label=f"adherence ({adherence_key})",
    )
    ax.set(xlabel="guidance scale w", ylabel="adherence (fraction right)", ylim=(-0.03, 1.03))
    right = ax.twinx()
    right.plot(
        scales,
        [r["diversity"]["normalized_entropy"] for r in rows],
        "s--",
        color="tab:orange",
        label="diversity (normalised entropy)",
    )
    right.set(ylabel="diversity: entropy / max entropy", ylim=(-0.03, 1.03))
    ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
    lines = ax.get_lines()[:1] + right.get_lines()[:1]
    ax.legend(lines, [line.get_label() for line in lines], loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sampling_sweep(
    pipe,
    prompts,
    steps,
    sampler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
    guidance_scale: float | None = None,
    batch_size: int = 100,
) -> list[dict]:
    """Wall-clock seconds and adherence for each number of sampler steps, same prompts and seeds.

    Returns one dict per entry of `steps`: sampler, eta, steps, seconds (for all prompts),
    adherence (`sdedu.metrics.adherence`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    extra = {} if guidance_scale is None else {"guidance_scale": float(guidance_scale)}
    rows = []
    for n in steps:
        start = time.perf_counter()
        images = _generate(
            pipe, prompts, batch_size, seed=seed, num_inference_steps=int(n), sampler=sampler, eta=eta, **extra
        )
        seconds = time.perf_counter() - start
        rows.append(
            {
                "sampler": sampler,
                "eta": eta,
                "steps": int(n),
                "seconds": seconds,
                "adherence": metrics.adherence(images, prompts),
            }
        )
    return rows
