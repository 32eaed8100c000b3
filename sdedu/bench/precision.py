"""precision: fp32 vs bf16 vs int8 vs pruned vs compiled (+ text cache, + bf16): time, size, adherence."""

from __future__ import annotations

import time

import torch

from sdedu import optimize
from sdedu.bench.common import (
    IMAGES,
    STEPS,
    adherence_of,
    bench_row,
    compiled_state,
    is_trained,
    sample_prompts,
)
from sdedu.bench.measure import interleaved_times


def _variants(ctx, batch):
    pipe = ctx.pipe
    yield "fp32", lambda: pipe
    yield "bf16 autocast" if ctx.device.type == "cpu" else "fp16 autocast", lambda: optimize.autocast(pipe)
    yield "int8 weights", lambda: optimize.quantize_int8(pipe)
    yield "pruned 30%", lambda: optimize.prune(pipe, 0.3)
    yield "text cache", lambda: optimize.cache_text_embeddings(pipe)
    if not ctx.quick:  # compiling takes tens of seconds
        yield "compiled", lambda: ctx.compiled(batch)
        yield "compiled + text cache", lambda: optimize.cache_text_embeddings(ctx.compiled(batch))
        # Compiled, the casts fuse into the kernels around them: on a CPU with AMX the low precision
        # then pays (0.83x the compiled fp32 time, measured); where bf16 is emulated, expect it to
        # cost, as eager bf16 does. Against the row above, it isolates what the low precision adds.
        low = "bf16" if ctx.device.type == "cpu" else "fp16"
        yield (
            f"compiled + {low} autocast + text cache",
            lambda: optimize.cache_text_embeddings(optimize.compile(optimize.autocast(pipe), batch_size=batch)),
        )


def precision_section(ctx) -> list:
    """fp32 vs bf16 vs int8 vs pruned vs compiled: time for n images x 25 steps, UNet size, adherence."""
    n_images, repeats = ctx.n(IMAGES, 2), ctx.n(7, 2)
    steps = ctx.n(STEPS, 3)
    prompts = sample_prompts(n_images)[0]
    trained = is_trained(ctx.pipe)
    n_judged = ctx.n(128, 8)
    reference = ctx.pipe(prompts, num_inference_steps=steps, seed=ctx.seed)
    # 1. Build every variant (compiling happens here), then time them all in turn.
    variants, build_seconds = {}, {}
    for name, build in _variants(ctx, 2 * n_images):
        start = time.perf_counter()
        variants[name] = build()
        build_seconds[name] = time.perf_counter() - start
    runs = {name: (lambda v=v: v(prompts, num_inference_steps=steps, seed=ctx.seed)) for name, v in variants.items()}
    seconds = interleaved_times(runs, repeats, 1, ctx.device)
    # 2. What each costs: image change against fp32, size, adherence.
    rows, results = [], {}
    for name, variant in variants.items():
        change = (runs[name]() - reference).abs().max().item()
        # Judged in batches of the timed size: a compiled UNet would recompile for another batch.
        score = adherence_of(variant, n_judged, batch_size=n_images, seed=ctx.seed) if trained else {}
        size = optimize.model_size_bytes(variant.unet)
        results[name] = {
            "seconds": seconds[name],
            "adherence": score.get("all"),
            "max_image_change": change,
            "bytes": size,
        }
        rows.append(
            bench_row(
                "precision",
                f"{name}: {n_images} images x {steps} steps",
                seconds[name],
                unit="s",
                unet_bytes=size,
                sparsity=optimize.sparsity(variant.unet),
                max_image_change=change,
                adherence=score or "skipped (random weights)",
                build_seconds=build_seconds[name],
                compiled=compiled_state(variant.unet),
            )
        )
    base = results["fp32"]
    for name, result in results.items():
        if name != "fp32":
            rows.append(bench_row("precision", f"{name}: time / fp32", result["seconds"] / base["seconds"], unit="x"))
        if result["bytes"] != base["bytes"]:
            rows.append(
                bench_row(
                    "precision",
                    f"{name}: UNet size / fp32",
                    result["bytes"] / base["bytes"],
                    unit="x",
                    unet_bytes=result["bytes"],
                )
            )
        if trained:
            rows.append(bench_row("precision", f"{name}: adherence (all four)", result["adherence"], n=n_judged))

    # 3. The fastest variant that keeps adherence (within 2 points of fp32's), or, without trained
    # weights, whose images stay within 0.05 of fp32's.
    def keeps(result):
        if trained:
            return result["adherence"] >= base["adherence"] - 0.02
        return result["max_image_change"] <= 0.05

    best = min((n for n, r in results.items() if keeps(r)), key=lambda n: results[n]["seconds"])
    best_s = results[best]["seconds"]
    label = f"best that keeps adherence ({best}): {n_images} images x {steps} steps"
    if n_images == IMAGES and steps == STEPS:
        rows.append(
            bench_row(
                "precision", label, best_s, "<= 0.5", best_s <= 0.5, "s", variant=best, threads=torch.get_num_threads()
            )
        )
    else:
        rows.append(bench_row("precision", label, best_s, unit="s", variant=best))
    return rows
