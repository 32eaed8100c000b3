"""Look inside the tiny Stable Diffusion: shapes, parameter counts, attention maps, sweeps.

The notebooks keep asking the same questions of a model; each function answers one of them.

- `trace_shapes(model, *inputs)`: every submodule's input and output shapes, in the order the
  forward pass calls them (recorded with forward hooks, which are removed afterwards);
  `format_shape_table` prints them.
- `parameter_counts(model)` / `parameter_counts_by_kind(model, kinds)`: where the parameters
  live, by part name or by block type.
- `word_attention_maps(pipe, prompt)`: Stable Diffusion's cross-attention maps, one per token of
  the prompt: for every latent pixel, how much attention it paid to that word (Hertz et al.
  2022, "Prompt-to-Prompt", section 3.1), averaged over heads, layers and denoising steps;
  `plot_word_maps` draws them over the image.
- `guidance_sweep(pipe, prompts, scales)`: prompt adherence and diversity, by the shapes judge,
  at each classifier-free guidance scale; `plot_guidance_sweep` draws the trade-off.
- `sampling_sweep(pipe, prompts, steps)`: seconds and adherence for each number of sampler steps.
- `training_step_seconds(model, x0, schedule)`: the measured cost of one training step.

Nothing here changes a model: hooks and stored attention are switched off again on exit, and
`training_step_seconds` trains a copy.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_int_range, check_tensor, describe
from sdedu.diffusion import noise_prediction_loss

__all__ = [
    "ShapeRecord",
    "trace_shapes",
    "format_shape_table",
    "parameter_counts",
    "parameter_counts_by_kind",
    "WordAttention",
    "word_attention_maps",
    "plot_word_maps",
    "guidance_sweep",
    "plot_guidance_sweep",
    "sampling_sweep",
    "training_step_seconds",
]


# ---- shapes through a forward pass ---------------------------------------------------------


@dataclass
class ShapeRecord:
    """One submodule call: its name, class, input shapes (tensor arguments only), output shape."""

    name: str
    kind: str
    inputs: list
    output: tuple
    parameters: int


def _shapes(value):
    """Shape of a tensor, or shapes of the tensors in a tuple/list (other values are skipped)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return [tuple(v.shape) for v in value if isinstance(v, torch.Tensor)]
    return None


def trace_shapes(model: nn.Module, *inputs, depth: int = 1, **kwargs) -> list[ShapeRecord]:
    """Run model(*inputs, **kwargs) once and record every submodule call at `depth`, in call order.

    Args:
        model: any nn.Module.
        inputs, kwargs: what model.forward takes.
        depth: 1 for the model's direct children (`down0_res`), 2 for their children, ...
    Returns:
        one `ShapeRecord` per call (a module called twice appears twice).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}")
    depth = check_int_range("depth", depth, 1, 100)
    records: list[ShapeRecord] = []

    def hook_for(name):
        def hook(module, args, output):
            records.append(
                ShapeRecord(
                    name=name,
                    kind=type(module).__name__,
                    inputs=[tuple(a.shape) for a in args if isinstance(a, torch.Tensor)],
                    output=_shapes(output),
                    parameters=sum(p.numel() for p in module.parameters()),
                )
            )

        return hook

    # 1. A hook on every module `depth` levels down (names with depth - 1 dots).
    handles = [
        module.register_forward_hook(hook_for(name))
        for name, module in model.named_modules()
        if name and name.count(".") == depth - 1
    ]
    # 2. One forward pass without gradients; 3. always remove the hooks.
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return records


def format_shape_table(records: list[ShapeRecord]) -> str:
    """The records as an aligned text table: step, name, class, input shape(s), output shape, parameters."""

    def show(shapes):
        if isinstance(shapes, tuple):
            return str(shapes)
        return ", ".join(str(s) for s in shapes) if shapes else "-"

    rows = [("#", "module", "class", "input shape(s)", "output shape", "parameters")]
    rows += [
        (str(i), r.name, r.kind, show(r.inputs), show(r.output), f"{r.parameters:,}") for i, r in enumerate(records)
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(w) if c in (0, 5) else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ---- parameter counts ------------------------------------------------------------------------


def parameter_counts(model: nn.Module, depth: int = 1) -> dict[str, int]:
    """Parameters per part: names cut to their first `depth` components, in definition order.

    parameter_counts(unet) -> {"time_embedding": ..., "conv_in": ..., "down0_res": ..., ...}
    The values add up to the model's total.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}")
    depth = check_int_range("depth", depth, 1, 100)
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = ".".join(name.split(".")[:depth])
        counts[part] = counts.get(part, 0) + p.numel()
    return counts


def parameter_counts_by_kind(model: nn.Module, kinds) -> dict[str, int]:
    """Parameters per block type: each parameter counts for the outermost module of one of `kinds`
    that holds it, else for "other". The values add up to the model's total.

    parameter_counts_by_kind(unet, (ResBlock, SpatialTransformer)) -> {"ResBlock": ..., "SpatialTransformer": ..., "other": ...}
    """
    kinds = tuple(kinds)
    if not kinds or not all(isinstance(k, type) for k in kinds):
        raise TypeError(f"kinds must be a non-empty sequence of nn.Module classes; got {describe(kinds)}")
    owner: dict[int, str] = {}
    for _, module in model.named_modules():  # parents come before their children
        if isinstance(module, kinds):
            for p in module.parameters():
                owner.setdefault(id(p), type(module).__name__)
    counts = {k.__name__: 0 for k in kinds}
    counts["other"] = 0
    for p in model.parameters():
        counts[owner.get(id(p), "other")] += p.numel()
    return counts


# ---- cross-attention maps per word -----------------------------------------------------------


@dataclass
class WordAttention:
    """Cross-attention maps of one generated image.

    image: (3, 32, 32) the generated image in [0, 1].
    tokens: the prompt's tokens, <start> and <end> included (padding dropped unless asked for).
    maps: (len(tokens), H, W) attention per token, averaged over heads, layers and steps; at each
        pixel the values over *all* L tokens sum to 1.
    per_layer: layer name -> (len(tokens), H, W), averaged over heads and steps only.
    """

    image: torch.Tensor
    tokens: list
    maps: torch.Tensor
    per_layer: dict


@torch.no_grad()
def word_attention_maps(
    pipe,
    prompt: str,
    seed: int = 0,
    num_inference_steps: int = 25,
    guidance_scale: float | None = None,
    include_padding: bool = False,
) -> WordAttention:
    """Generate one image for `prompt` and measure where each word was looked at.

    1. Generate with `pipe`, keeping the trajectory of latents z_t.
    2. Re-run the UNet's conditional branch on each z_t with every CrossAttention module storing
       its probabilities softmax(Q K^T / sqrt(d)): (1, heads, h*w, L), queries = latent pixels,
       keys = tokens.
    3. Average over heads, fold h*w back to (h, w), upsample 4x4 layers to the 8x8 latent grid
       (nearest), and average over layers and steps.

    Args:
        pipe: a `TinyStableDiffusion`.
        prompt: one prompt.
        seed, num_inference_steps: as for `pipe(...)`.
        guidance_scale: as for `pipe(...)` (None: the pipeline's default).
        include_padding: keep the <pad> tokens (they receive attention too: nothing masks them).
    """
    from sdedu.nn.attention import CrossAttention

    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be one str; got {describe(prompt)}")
    extra = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
    # 1. The image and its trajectory.
    trajectory = pipe(prompt, num_inference_steps=num_inference_steps, seed=seed, return_trajectory=True, **extra)
    cond, _ = pipe.encode_prompt([prompt])  # (1, L, D)
    ids = pipe.tokenizer([prompt])  # (1, L)
    tokens = pipe.tokenizer.decode(ids)[0]
    layers = {name: m for name, m in pipe.unet.named_modules() if isinstance(m, CrossAttention)}
    size = trajectory.latents.shape[-1]  # latent side, 8
    sums = {name: 0.0 for name in layers}
    before = {name: m.store_attention for name, m in layers.items()}
    # 2. Conditional UNet calls along the trajectory, with the probabilities kept.
    try:
        for m in layers.values():
            m.store_attention = True
        for z, t in zip(trajectory.latents[:-1], trajectory.timesteps):
            pipe.unet(z.to(pipe.device), t.reshape(1).to(pipe.device), cond)
            for name, m in layers.items():
                probs = m.attention_probs[0].mean(dim=0)  # (h*w, L), heads averaged
                side = math.isqrt(probs.shape[0])
                grid = probs.T.reshape(1, -1, side, side)  # (1, L, h, w)
                sums[name] = sums[name] + F.interpolate(grid, size=(size, size), mode="nearest")[0].cpu()  # (L, 8, 8)
    finally:
        for name, m in layers.items():
            m.store_attention = before[name]
            m.attention_probs = None
    # 3. Averages over steps (per layer) and over layers.
    steps = len(trajectory.timesteps)
    keep = len(tokens) if include_padding else tokens.index("<end>") + 1 if "<end>" in tokens else len(tokens)
    per_layer = {name: s[:keep] / steps for name, s in sums.items()}
    maps = torch.stack(list(per_layer.values())).mean(dim=0)  # (keep, 8, 8)
    return WordAttention(image=trajectory.images[0].cpu(), tokens=tokens[:keep], maps=maps, per_layer=per_layer)


def plot_word_maps(attention: WordAttention, size: float = 1.6, title: str | None = None) -> plt.Figure:
    """The image, then one panel per token: its attention map (upsampled smoothly) over the image in grey."""
    image = attention.image.permute(1, 2, 0).clamp(0, 1).numpy()  # (32, 32, 3)
    grey = image.mean(axis=2)
    H, W = grey.shape
    smooth = F.interpolate(attention.maps[None], size=(H, W), mode="bilinear", align_corners=False)[0]  # (n, H, W)
    count = len(attention.tokens) + 1
    fig, axes = plt.subplots(1, count, figsize=(size * count, size + 0.4), squeeze=False)
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].set_title("image", fontsize=9)
    vmax = float(attention.maps.max())
    for ax, token, heat in zip(axes[0, 1:], attention.tokens, smooth):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(heat.numpy(), cmap="magma", alpha=0.75, vmin=0, vmax=vmax)
        ax.set_title(token, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ---- sweeps with the judge -------------------------------------------------------------------


def _generate(pipe, prompts, batch_size: int, **kwargs) -> torch.Tensor:
    """pipe(...) over prompts in batches; batch i uses seed + i so batches differ."""
    seed = kwargs.pop("seed", 0)
    return torch.cat(
        [pipe(prompts[i : i + batch_size], seed=seed + i, **kwargs) for i in range(0, len(prompts), batch_size)]
    )


def guidance_sweep(
    pipe, prompts, scales, seed: int = 0, num_inference_steps: int = 25, attribute: str = "shape", batch_size: int = 100
) -> list[dict]:
    """Adherence and diversity of the same prompts and seeds at each guidance scale s.

    eps = eps_uncond + s (eps_cond - eps_uncond)   (Ho & Salimans 2022, eq. 6; s = 1 is no guidance)

    Args:
        pipe: a `TinyStableDiffusion`.
        prompts: the prompts (repeat a prompt to get several images of it).
        scales: guidance scales to try.
        attribute: the judged attribute whose spread is reported as diversity.
    Returns:
        one dict per scale: guidance_scale, adherence (`sdedu.metrics.adherence`), diversity
        (`sdedu.metrics.diversity` of `attribute`) and images (B, 3, 32, 32).
    """
    from sdedu import metrics

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
    ax.set(xlabel="guidance scale s", ylabel="adherence (fraction right)", ylim=(-0.03, 1.03))
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
    from sdedu import metrics

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


# ---- training cost ---------------------------------------------------------------------------


def training_step_seconds(
    model: nn.Module, x0: torch.Tensor, schedule, repeats: int = 3, warmup: int = 1, **model_kwargs
) -> float:
    """Median seconds of one training step (loss, backward, AdamW update) on a copy of `model`.

    The step is Ho et al. 2020's Algorithm 1: loss = || eps - model(x_t, t, **model_kwargs) ||^2.

    Args:
        model: an eps-predictor (it is copied, never changed).
        x0: (B, ...) a training batch (pixels or latents), on the model's device.
        schedule: the NoiseSchedule.
        repeats: timed steps (the median is returned); warmup: untimed steps first.
        model_kwargs: passed to the model, e.g. cond=...
    """
    check_tensor("x0", x0, floating=True)
    repeats = check_int_range("repeats", repeats, 1, 1000)
    warmup = check_int_range("warmup", warmup, 0, 1000)
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        loss = noise_prediction_loss(model, x0, schedule, generator=generator, **model_kwargs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if x0.device.type == "cuda":
            torch.cuda.synchronize(x0.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
