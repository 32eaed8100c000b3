"""Diagrams drawn from real objects: the UNet from its config, guidance from two predictions, a ring all-reduce.

- `unet_diagram(config)`: sdedu's UNet as a "U", each stage a box with its true output shape
  (C x H x W), traced from a model built from `config` (`sdedu.anatomy.trace_shapes`), skip
  connections as arcs: change the config and the picture changes with it.
- `guidance_vectors(eps_uncond, eps_cond, scales)`: classifier-free guidance as arrows. The guided
  predictions eps_uncond + w (eps_cond - eps_uncond) all lie in the plane spanned by the two
  predictions, so drawing that plane in an orthonormal basis is exact, not an approximation.
- `ring_allreduce_diagram(n_ranks)`: the reduce-scatter and all-gather steps of a ring all-reduce
  (Patarasuk & Yuan 2009; what NCCL and gloo run for data-parallel gradients), simulated
  chunk by chunk by `ring_allreduce_steps`.

Each returns the matplotlib `Figure`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch, Rectangle

from sdedu._checks import check_int_range, check_same_shape, check_tensor
from sdedu.anatomy import trace_shapes
from sdedu.guidance import classifier_free_guidance
from sdedu.models.unet import UNet, UNetConfig

__all__ = ["unet_stages", "unet_diagram", "guidance_vectors", "ring_allreduce_steps", "ring_allreduce_diagram"]

_BLOCK = re.compile(r"^(down\d+|mid|up\d+)_(res|attn)$")
_COLORS = {"conv": "0.75", "res": "tab:blue", "attn": "tab:orange", "resample": "tab:green"}
_NAMES = {"conv": "conv", "res": "ResBlock", "attn": "ResBlock + attention", "resample": "down/upsample"}


def unet_stages(config: UNetConfig | None = None) -> list[dict]:
    """The UNet's stages in call order, from one traced forward pass of a model built from `config`.

    A ResBlock and the SpatialTransformer after it form one stage ("down0", "mid", "up1", ...).
    Returns dicts with name, kind ("conv", "res", "attn" when the stage attends, "resample"),
    shape (C, H, W) of the stage's output and, for the first stage, input_shape (C, H, W).
    """
    config = config or UNetConfig()
    if not isinstance(config, UNetConfig):
        raise TypeError(f"config must be a UNetConfig; got {type(config).__name__}")
    n = config.sample_size
    with torch.random.fork_rng(), torch.no_grad():  # building the model must not move the caller's RNG
        unet = UNet(config).eval()
        z_t = torch.zeros(1, config.in_channels, n, n)
        cond = torch.zeros(1, 2, config.context_dim)
        records = trace_shapes(unet, z_t, torch.zeros(1, dtype=torch.long), cond)
    stages: list[dict] = []
    for record in records:
        if record.name in ("time_embedding", "norm_out"):
            continue
        block = _BLOCK.match(record.name)
        name = block.group(1) if block else record.name
        kind = block.group(2) if block else ("resample" if "sample" in record.name else "conv")
        if stages and stages[-1]["name"] == name:
            stages[-1].update(kind="attn" if kind == "attn" else stages[-1]["kind"], shape=tuple(record.output[1:]))
            continue
        stages.append({"name": name, "kind": kind, "shape": tuple(record.output[1:])})
    stages[0]["input_shape"] = tuple(z_t.shape[1:])
    return stages


def _arrow(ax, start, end, **style):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, lw=1.0, **style))


def unet_diagram(config: UNetConfig | None = None, size: float = 1.0) -> plt.Figure:
    """Draw sdedu's UNet as a U: boxes at the height of their resolution, labelled with their true shapes.

    Box height is proportional to the feature map's side H, box width to its channel count C;
    orange boxes attend (self-attention and cross-attention to the prompt), blue ones are ResBlocks
    only; arcs are the skip connections (concatenated on the channel axis).

    Args:
        config: the `UNetConfig` to draw (default: the shipped model's sizes).
        size: scale of the figure.
    """
    stages = unet_stages(config)
    top = stages[0]["shape"][1]
    widest = max(stage["shape"][0] for stage in stages)
    levels = math.log2(top / min(stage["shape"][1] for stage in stages))
    fig, ax = plt.subplots(figsize=(0.8 * size * (1.2 * len(stages) + 1.6), 0.8 * size * (1.6 * levels + 3.2)))
    boxes = []  # (name, x, y, width, height) per stage, the input z_t first
    for i, stage in enumerate([{"name": "z_t", "kind": "input", "shape": stages[0]["input_shape"]}] + stages):
        C, H, W = stage["shape"]
        height, width = 1.2 * H / top, 0.25 + 0.5 * C / widest
        x, y = 1.2 * i, -1.6 * math.log2(top / H)  # one row per resolution
        color = "white" if stage["kind"] == "input" else _COLORS[stage["kind"]]
        ax.add_patch(Rectangle((x - width / 2, y - height / 2), width, height, facecolor=color, edgecolor="black"))
        label = "eps_pred" if i == len(stages) else stage["name"]
        ax.text(x, y + height / 2 + 0.08, label, ha="center", va="bottom", fontsize=8)
        ax.text(x, y - height / 2 - 0.08, f"{C}x{H}x{W}", ha="center", va="top", fontsize=7)
        boxes.append((stage["name"], x, y, width, height))
    for (_, x0, y0, w0, _), (_, x1, y1, w1, _) in zip(boxes, boxes[1:]):
        _arrow(ax, (x0 + w0 / 2, y0), (x1 - w1 / 2, y1), color="black")
    tops = {name: (x, y + height / 2) for name, x, y, _, height in boxes}
    for name, (x, y) in tops.items():
        partner = tops.get(name.replace("down", "up")) if re.fullmatch(r"down\d+", name) else None
        if partner is None:
            continue
        lift = 0.5 + 0.1 * (partner[0] - x)  # longer skips arc higher, so that they do not cross
        ax.plot([x, x, partner[0]], [y + 0.32, y + lift, y + lift], "--", color="0.4", lw=1)
        _arrow(ax, (partner[0], y + lift), (partner[0], partner[1] + 0.32), color="0.4", ls="--")
        ax.text((x + partner[0]) / 2, y + lift + 0.05, "skip (concat)", ha="center", fontsize=7, color="0.4")
    kinds = [kind for kind in _COLORS if any(stage["kind"] == kind for stage in stages)]  # only what is drawn
    handles = [Rectangle((0, 0), 1, 1, facecolor=_COLORS[kind], edgecolor="black") for kind in kinds]
    ax.legend(handles, [_NAMES[kind] for kind in kinds], loc="lower right", fontsize=7, framealpha=1)
    ax.set_title(
        "sdedu's UNet: box height = feature-map side, width = channels (every ResBlock also gets t)", fontsize=9
    )
    ax.set_xlim(-0.8, 1.2 * len(stages) + 0.8)
    ax.set_ylim(-1.6 * levels - 1.5, 0.8 + 0.1 * 1.2 * len(stages) + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


def guidance_vectors(
    eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scales: Sequence[float] = (0.0, 1.0, 2.0, 4.0)
) -> plt.Figure:
    """Arrows of eps_uncond, eps_cond and the guided eps at each scale w, in the plane the two span.

    Two panels: the vectors from the origin (true lengths and angle), and their tips enlarged, where
    the guided predictions (dots) walk along the line through eps_uncond and eps_cond.

    Args:
        eps_uncond, eps_cond: two noise predictions of any equal shape (one latent, or one pixel of it),
            flattened; they must not be parallel.
        scales: guidance scales w; each guided eps is `classifier_free_guidance(eps_uncond, eps_cond, w)`.
    """
    check_tensor("eps_uncond", eps_uncond, floating=True)
    check_same_shape("eps_cond", eps_cond, "eps_uncond", eps_uncond)
    u, c = eps_uncond.detach().double().flatten(), eps_cond.detach().double().flatten()
    e1 = u / u.norm()
    rest = c - (c @ e1) * e1
    if float(rest.norm()) <= 1e-9 * float(c.norm()):
        raise ValueError("eps_cond must not be parallel to eps_uncond: they span no plane to draw")
    e2 = rest / rest.norm()

    def plane(v):  # exact coordinates: every vector drawn lies in span(eps_uncond, eps_cond)
        v = v.detach().double().flatten()
        return np.array([float(v @ e1), float(v @ e2)])

    uncond, cond = plane(eps_uncond), plane(eps_cond)
    guided = [plane(classifier_free_guidance(eps_uncond, eps_cond, float(w))) for w in scales]
    reds = plt.cm.Reds(np.linspace(0.45, 0.95, len(scales)))
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(9.0, 4.0))
    # Left: the vectors from the origin, at their true lengths and angle.
    for point, color, label in [(uncond, "0.45", "eps_uncond"), (cond, "tab:blue", "eps_cond")] + [
        (point, color, f"guided, w = {w:g}") for point, color, w in zip(guided, reds, scales) if w not in (0, 1)
    ]:
        full.annotate("", point, (0, 0), arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.2})
        full.plot([], [], color=color, label=label)
    ends = np.array([uncond, cond, *guided, np.zeros(2)])
    _frame(full, ends, "from the origin: true lengths and angle")
    full.legend(fontsize=7, loc="best")
    # Right: the tips, enlarged: every guided eps lies on the line through eps_uncond and eps_cond.
    k = np.array([min(-0.3, min(scales) - 0.3), max(1.3, max(scales) + 0.3)])
    line = uncond[None, :] + k[:, None] * (cond - uncond)[None, :]
    zoom.plot(line[:, 0], line[:, 1], ":", color="0.6", lw=1, label="eps_uncond + w (eps_cond - eps_uncond)")
    zoom.annotate("", cond, uncond, arrowprops={"arrowstyle": "-|>", "color": "tab:blue", "lw": 1.5})
    zoom.text(*uncond, "eps_uncond  ", color="0.35", fontsize=8, ha="right", va="top")
    zoom.text(*cond, "eps_cond  ", color="tab:blue", fontsize=8, ha="right", va="top")
    for point, color, w in zip(guided, reds, scales):
        zoom.plot(*point, "o", color=color, ms=5)
        zoom.text(*point, f"  w = {w:g}", color=color, fontsize=8, va="bottom")
    _frame(zoom, np.array([uncond, cond, *guided]), "the tips, enlarged")
    zoom.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _frame(ax, points: np.ndarray, title: str) -> None:
    """Equal-aspect limits around (K, 2) points, axis labels of the plane, a title."""
    centre, half = (points.max(0) + points.min(0)) / 2, 0.6 * np.ptp(points, axis=0).max() + 1e-12
    ax.set(xlim=(centre[0] - half, centre[0] + half), ylim=(centre[1] - half, centre[1] + half), aspect="equal")
    ax.set_xlabel("along eps_uncond", fontsize=8)
    ax.set_ylabel("the rest of eps_cond", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def ring_allreduce_steps(n_ranks: int) -> list[tuple[str, list[list[frozenset]], list[tuple[int, int]]]]:
    """Simulate a ring all-reduce chunk by chunk.

    Each rank's gradient is cut into n_ranks chunks; rank r sends only to rank r + 1 (mod n).
    Reduce-scatter, step k: rank r sends chunk (r - k) mod n, which the receiver adds to its own.
    All-gather, step k: rank r sends chunk (r + 1 - k) mod n, which the receiver overwrites.
    Returns (title, held, sends) per state: held[r][c] = the ranks whose chunk c is summed in
    rank r's copy, sends = the (rank, chunk) sent to reach that state. The last state has every
    chunk summed over every rank on every rank, after 2 (n - 1) steps.
    """
    n = check_int_range("n_ranks", n_ranks, 2, 16)
    held = [[frozenset([r]) for _ in range(n)] for r in range(n)]
    states = [("start: own gradient, in chunks", held, [])]
    for phase, chunk_of in (("reduce-scatter", lambda r, k: (r - k) % n), ("all-gather", lambda r, k: (r + 1 - k) % n)):
        for k in range(n - 1):
            sends = [(r, chunk_of(r, k)) for r in range(n)]
            new = [list(row) for row in held]
            for r, c in sends:
                receiver = (r + 1) % n
                new[receiver][c] = held[receiver][c] | held[r][c] if phase == "reduce-scatter" else held[r][c]
            held = new
            states.append((f"{phase} {k + 1}/{n - 1}", held, sends))
    return states


def ring_allreduce_diagram(n_ranks: int = 4, size: float = 2.2) -> plt.Figure:
    """Draw every step of a ring all-reduce over `n_ranks` ranks (`ring_allreduce_steps`).

    Ranks sit on a circle, each with its gradient cut into n_ranks chunks; a chunk's shade is how
    many ranks' gradients it holds the sum of (the number written in it), arrows are this step's
    sends, labelled with the chunk index. Each rank sends 2 (n - 1) chunks of 1/n of the gradient.
    """
    states = ring_allreduce_steps(n_ranks)
    n = n_ranks
    ncols = min(4, len(states))
    nrows = math.ceil(len(states) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    angle = [math.pi / 2 - 2 * math.pi * r / n for r in range(n)]
    where = [(math.cos(a), math.sin(a)) for a in angle]
    cell = 0.9 / n
    blues = plt.cm.Blues
    for ax, (title, held, sends) in zip(axes.flat, states):
        for r, (x, y) in enumerate(where):
            ax.text(x, y + cell + 0.05, f"rank {r}", ha="center", fontsize=7)
            for c in range(n):
                count = len(held[r][c])
                left = x - n * cell / 2 + c * cell
                ax.add_patch(
                    Rectangle(
                        (left, y - cell / 2),
                        cell,
                        cell,
                        facecolor=blues(0.15 + 0.8 * count / n),
                        edgecolor="black",
                        lw=0.5,
                    )
                )
                ax.text(
                    left + cell / 2,
                    y,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if count > n / 2 else "black",
                )
        for r, c in sends:
            (x0, y0), (x1, y1) = where[r], where[(r + 1) % n]
            ax.add_patch(
                FancyArrowPatch(
                    (0.55 * x0, 0.55 * y0),
                    (0.55 * x1, 0.55 * y1),
                    connectionstyle="arc3,rad=0.25",
                    arrowstyle="-|>",
                    mutation_scale=8,
                    color="tab:red",
                    lw=0.8,
                )
            )
            ax.text(0.4 * (x0 + x1), 0.4 * (y0 + y1), f"chunk {c}", fontsize=6, color="tab:red", ha="center")
        ax.set_title(title, fontsize=8)
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.35, 1.5)
        ax.set_aspect("equal")
        ax.axis("off")
    for ax in list(axes.flat)[len(states) :]:
        ax.axis("off")
    fig.suptitle(
        f"ring all-reduce, {n} ranks: each sends 2(n-1) = {2 * (n - 1)} chunks of 1/{n} of the gradient "
        f"= {2 * (n - 1) / n:.2f}x its size (numbers: ranks summed in a chunk)",
        fontsize=8,
    )
    fig.tight_layout()
    return fig
