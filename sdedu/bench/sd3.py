"""sd3: the two shipped models side by side (issue 17): UNet + eps + DDIM vs MM-DiT + rectified flow + Euler.

For each: parameters, FLOPs per image at its default steps (guided: two branches per step),
training seconds recorded in its manifest, the training CPU-seconds to the adherence target (the
first checkpoint of the recipe's adherence log meeting 98/95/95/95%: from the manifest; for the shipped
UNet, whose manifest has no log, from `UNET_RECIPE_RUN`, a rerun of its recipe), adherence
(all four attributes, the judge) against network evaluations NFE = 1, 2, 4, 8, 16, 25 (quick: up
to 8), seconds for 16 images at its default steps (timed interleaved), the backbone forward's
fraction of the fp32 matmul peak measured in the same run, and the straightness of the sampling
paths: path length / distance between the ends, minus 1 (0 for a straight line), of the latent
trajectory z_T -> z_0. Then the tiny SD3's targets at its
default steps: adherence 98/95/95/95% (colour/shape/position/size), held-out pairs, every shape
>= 20% for "a red shape", and 16 images faster than the UNet's 16 x 25 DDIM.

The shipped MM-DiT's fraction of the peak is shown without a target: its matrices are small
(16 image tokens, K = 128). Issue 17's target (>= 50%) is on a throwaway MM-DiT of SD3's design
with 64 image tokens, eager and compiled, with the profiler's account of what still limits it:
the roofline section (`roofline.mmdit_roofline_rows`).
"""

from __future__ import annotations

import json

import torch

from sdedu import metrics
from sdedu.bench.common import IMAGES, bench_row, is_trained, sample_prompts
from sdedu.bench.measure import count_flops, interleaved_times, matmul_calls, matmul_flops_per_second
from sdedu.bench.report import STEPS
from sdedu.data import shapes
from sdedu.training.evaluation import ADHERENCE_TARGET
from sdedu.weights import SHIPPED

NFES = (1, 2, 4, 8, 16, 25)
#: The shipped UNet predates seeded initialisation and logs no adherence; this records a rerun of its recipe
#: with today's code (seed 0): its adherence log, and the weights' sha256 (not shipped: docs/CHANGELOG.md).
UNET_RECIPE_RUN = SHIPPED / "unet_recipe_run.json"
FLOORS = ADHERENCE_TARGET  # colour, shape, position, size: issue 17's target on full prompts


def straightness(latents: torch.Tensor) -> float:
    """Mean over images of (length of the path z_T -> z_0) / ||z_0 - z_T|| - 1; latents (n + 1, B, ...)."""
    steps = (latents[1:] - latents[:-1]).flatten(2).norm(dim=-1).sum(0)  # (B,)
    chord = (latents[-1] - latents[0]).flatten(1).norm(dim=-1)  # (B,)
    return float((steps / chord - 1).mean())


def _generate(pipe, prompts, steps, seed, batch_size=100):
    return torch.cat(
        [
            pipe(prompts[i : i + batch_size], num_inference_steps=steps, seed=seed + i).cpu()
            for i in range(0, len(prompts), batch_size)
        ]
    )


def _forward_flops(pipe, backbone: str) -> int:
    """FLOPs of one guided step for one image: the backbone on a batch of 2 (unconditional + conditional)."""
    cond, uncond = pipe.encode_prompt(["a red shape"])
    z = torch.zeros(2, *pipe.latent_shape, device=pipe.device)
    t = torch.full((2,), 500, device=pipe.device)
    if backbone == "mmdit":
        return count_flops(lambda: pipe.velocity(z, t.float(), torch.cat([uncond, cond])))
    return count_flops(lambda: pipe.unet(z, t, torch.cat([uncond, cond])))


def _time_to_target_row(name: str, pipe, training: dict):
    """Training CPU-seconds to the first checkpoint meeting ADHERENCE_TARGET, read from the recipe's
    adherence log (`training.time_to_target`) in the manifest or, for the shipped UNet, in `UNET_RECIPE_RUN`;
    NaN, with the reason, where there is none."""
    source = "manifest"
    if "adherence_log" not in training and name == "unet" and UNET_RECIPE_RUN.exists():
        record = json.loads(UNET_RECIPE_RUN.read_text())
        if pipe.manifest.get("components", {}).get("unet", {}).get("sha256") == record["shipped_sha256"]:
            training = record["training"]
            source = (
                f"{UNET_RECIPE_RUN.name}: a rerun of the UNet recipe (seed 0, weights {record['weights_sha256'][:8]}, "
                "not shipped: the shipped UNet predates seeded initialisation)"
            )
    if "adherence_log" not in training:
        reached, note = None, "not measured: no adherence log in the manifest (a recipe run with evaluation logs one)"
    else:
        reached = training.get("time_to_target")
        note = f"from {source}" if reached else f"not reached in {training.get('steps')} steps"
    return bench_row(
        "sd3",
        f"{name}: training CPU-seconds to the adherence target (recipe's log)",
        reached["cpu_seconds"] if reached else float("nan"),
        unit="s",
        step=reached["step"] if reached else None,
        wall_seconds=reached["seconds"] if reached else None,
        note=note,
    )


@torch.no_grad()
def sd3_section(ctx) -> list:
    """UNet + eps + DDIM vs MM-DiT + flow + Euler, measured side by side (module docstring)."""
    from sdedu.pipeline.sd3 import TinyStableDiffusion3

    unet_pipe = ctx.pipe
    sd3 = TinyStableDiffusion3.from_pretrained(device=ctx.device)
    models = {"unet": (unet_pipe, STEPS), "mmdit": (sd3, sd3.default_steps)}
    rows = []
    # 1. Size and cost.
    for name, (pipe, steps) in models.items():
        backbone = pipe.unet if name == "unet" else pipe.mmdit
        flops = _forward_flops(pipe, name) * steps
        training = (pipe.manifest.get("components", {}).get(name, {}) or {}).get("training", {})
        rows.append(bench_row("sd3", f"{name}: parameters", sum(p.numel() for p in backbone.parameters())))
        rows.append(bench_row("sd3", f"{name}: GFLOPs per image, {steps} guided steps", flops / 1e9, steps=steps))
        rows.append(
            bench_row(
                "sd3", f"{name}: training seconds (manifest)", training.get("train_seconds", float("nan")), unit="s"
            )
        )
        rows.append(_time_to_target_row(name, pipe, training))
    # 2. Speed, 16 images at each one's default steps, and the backbones against the matmul peak.
    prompts = sample_prompts(IMAGES)[0]
    calls = {
        name: (lambda p=pipe, s=steps: p(prompts, num_inference_steps=s, seed=ctx.seed))
        for name, (pipe, steps) in models.items()
    }
    z = torch.randn(2 * IMAGES, *sd3.latent_shape, generator=torch.Generator().manual_seed(0)).to(ctx.device)
    packed = torch.cat(sd3.encode_prompt(prompts))  # (2B, L, D + P)
    t = torch.full((2 * IMAGES,), 500.0, device=ctx.device)
    calls["mmdit forward"] = lambda: sd3.velocity(z, t, packed)
    sizes = ctx.n((512, 1024, 2048), (256, 512))
    calls.update(matmul_calls(ctx.device, sizes))
    seconds = interleaved_times(calls, ctx.n(7, 1), 1, ctx.device)
    peak = max(matmul_flops_per_second(seconds, sizes).values())
    forward_flops = count_flops(calls["mmdit forward"])
    fraction = forward_flops / seconds["mmdit forward"] / peak
    for name, (_, steps) in models.items():
        rows.append(
            bench_row("sd3", f"{name}: seconds for {IMAGES} images x {steps} guided steps", seconds[name], unit="s")
        )
    faster = seconds["mmdit"] < seconds["unet"]
    rows.append(
        bench_row(
            "sd3",
            f"mmdit {IMAGES} images faster than unet's",
            seconds["unet"] / seconds["mmdit"],
            "> 1",
            faster,
            unit="x",
        )
    )
    rows.append(
        bench_row(
            "sd3",
            f"mmdit forward (shipped, eager), batch {2 * IMAGES}: achieved / fp32 matmul peak (target: roofline)",
            fraction,
            peak_gflops=peak / 1e9,
            achieved_gflops=forward_flops / seconds["mmdit forward"] / 1e9,
            limit="small matrices (16 image + 12 text tokens, K = 128) and the element-wise work between them",
        )
    )
    # 3. Straightness of the sampling paths (25 steps each, the same prompts).
    for name, (pipe, _) in models.items():
        trajectory = pipe(prompts[: ctx.n(IMAGES, 4)], num_inference_steps=25, seed=ctx.seed, return_trajectory=True)
        rows.append(
            bench_row(
                "sd3", f"{name}: path length / chord - 1 (0 = straight), 25 steps", straightness(trajectory.latents)
            )
        )
    if not (is_trained(unet_pipe) and is_trained(sd3)):
        return rows
    # 4. Adherence against network evaluations (one guided call per step for both samplers).
    n = ctx.n(100, 8)
    prompts, attributes = sample_prompts(n, seed=ctx.seed + 1)
    for name, (pipe, _) in models.items():
        for nfe in NFES if not ctx.quick else NFES[:4]:
            score = metrics.adherence(_generate(pipe, prompts, nfe, ctx.seed), attributes)["all"]
            rows.append(bench_row("sd3", f"{name}: adherence (all four) at NFE {nfe}", score, n=n))
    # 5. The tiny SD3's targets at its default steps.
    n = ctx.n(200, 8)
    prompts, attributes = sample_prompts(n, seed=ctx.seed + 2)
    scores = metrics.adherence(_generate(sd3, prompts, sd3.default_steps, ctx.seed), attributes)
    rows += [
        bench_row("sd3", f"mmdit adherence: {a}", scores[a], f">= {f:g}", scores[a] >= f, n=n)
        for a, f in FLOORS.items()
    ]
    held = [dict(zip(("color", "shape"), shapes.HELD_OUT[i % len(shapes.HELD_OUT)])) for i in range(n // 2)]
    for item, extra in zip(held, shapes.sample_attributes(len(held), torch.Generator().manual_seed(ctx.seed + 3))):
        item.update(size=extra["size"], position=extra["position"])
    held_scores = metrics.adherence(
        _generate(sd3, [shapes.caption(a) for a in held], sd3.default_steps, ctx.seed), held
    )
    rows.append(bench_row("sd3", "mmdit held-out pairs: all four", held_scores["all"], **held_scores))
    red = _generate(sd3, ["a red shape"] * (n // 2), sd3.default_steps, ctx.seed)
    fractions = metrics.diversity(red, "shape")["fractions"]
    rows += [
        bench_row("sd3", f'mmdit "a red shape": {s}', fractions[s], ">= 0.2", fractions[s] >= 0.2)
        for s in shapes.SHAPES
    ]
    rows.append(bench_row("sd3", 'mmdit "a red shape": none (no shape read)', fractions.get("none", 0.0), n=n // 2))
    return rows
