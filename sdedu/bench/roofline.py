"""roofline: the UNet's and an MM-DiT's forward, achieved FLOP/s against this machine's matmul peak, measured now.

Beside the UNet: its matrix kernels alone (the most fusion could give) and wider UNets of the
same design (how the fraction grows with the sizes of the matrices). The MM-DiT (issue 17's
target 4) is a throwaway of SD3's design at a size where the matrices dominate (`ROOFLINE_MMDIT`:
width 192, 6 blocks, 64 image + 12 text tokens, random weights), timed eager and compiled on the
realistic load of 16 images x 2 (guidance), with the profiler's account of where its time goes.

Measured on the shared 2-core machine (1 thread, load 8-10 from other jobs, 3 runs of 7 interleaved
repeats, 2026-12-02): eager 0.49-0.52 of the peak, compiled 0.57-0.60 (before this session's fused
forward: 0.48-0.50 and 0.56-0.61, the same within the spread). The eager time: matrix products ~62%,
attention ~8%, element-wise ~14% (GELU, modulation, gates), new buffers and copies ~11% (each addmm
first fills its fresh output with the bias; the key/value concatenation), LayerNorm ~2%. What still
limits it: the element-wise passes and new buffers run at the memory's speed, which the machine's
other jobs share; the matrix products have K = 192. torch's CPU tanh is not vectorised (tanh-GELU
over 1.2M values ~17 ms against ~4 ms written with a sigmoid: `mmdit_blocks.gelu_tanh`).
Two threads on the same machine when it was idle (2026-12-02 03:52 UTC, `python -m sdedu.bench --sections
roofline`): matmul peak 146.7 GFLOP/s; MM-DiT eager 0.544, compiled 0.715; UNet eager 0.369, compiled
0.535 (its target >= 0.6 missed at 2 threads), its 74 matrix kernels alone 0.654, wider UNets (64, 128)
0.569 and (96, 192) 0.720; the MM-DiT's time: matrix products 58%, attention 8%, element-wise 17%,
LayerNorm 4%, new buffers and copies 10%. (Two threads while other jobs ran gave 0.08-0.16.)
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import torch

from sdedu import optimize
from sdedu.bench.common import IMAGES, bench_row, compiled_state, perturb_zero_layers, unet_inputs
from sdedu.bench.measure import count_flops, interleaved_times, layer_calls, matmul_calls, matmul_flops_per_second
from sdedu.models.mmdit import MMDiT, MMDiTConfig
from sdedu.models.unet import UNet, UNetConfig

WIDTH_FACTORS = (4 / 3, 2)  # 4/3 of (48, 96) is (64, 128), the size of the prototype #6 quotes
#: issue 17's throwaway MM-DiT: SD3's head size 64, patch 1 on 8x8 latents = 64 image tokens (+ 12 words)
ROOFLINE_MMDIT = MMDiTConfig(width=192, depth=6, num_heads=3, patch_size=1)
#: the profiler's aten operators, by what they do in the MM-DiT (any other operator: "other")
OPERATOR_KINDS = {
    "matrix products": ("aten::addmm", "aten::mm", "aten::bmm", "aten::mkldnn_convolution"),
    "attention kernel": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_softmax"),
    "GELU, modulation, gates (element-wise)": (
        "aten::sigmoid_",
        "aten::addcmul",
        "aten::mul",
        "aten::mul_",
        "aten::add",
    ),
    "LayerNorm": ("aten::native_layer_norm",),
    "new buffers and copies (addmm's bias, cat)": ("aten::copy_", "aten::cat", "aten::clone"),
}


def widened(config: UNetConfig, factor: float) -> UNetConfig:
    """`config` with its channels times `factor`, rounded to a multiple that GroupNorm and the heads divide."""
    unit = math.lcm(config.norm_groups, config.head_dim)
    return replace(config, channels=tuple(max(unit, round(c * factor / unit) * unit) for c in config.channels))


def _widened_pipeline(pipe, factor: float):
    """A copy of the pipeline with a wider, randomly initialised UNet: only its speed is measured."""
    new = copy.copy(pipe)
    new.unet = perturb_zero_layers(UNet(widened(optimize.unwrap(pipe.unet).config, factor)))
    return new.to(pipe.device)


@torch.no_grad()
def best_row(backbone: str, fractions: dict, variants, floor: float, judged: bool):
    """The row of the best of `variants` (names in `fractions`, achieved / peak of one forward): its
    fraction against the target >= `floor` where `judged` (a CPU's target), else with no target."""
    best = max(variants, key=fractions.get)
    return bench_row(
        "roofline",
        f"best {backbone} forward ({best}): achieved / peak",
        fractions[best],
        f">= {floor}" if judged else "",
        fractions[best] >= floor if judged else None,
        variant=best,
    )


def roofline_section(ctx) -> list:
    """The UNet forward's achieved FLOP/s as a fraction of this machine's matmul peak, same run.

    Everything is timed in turn (interleaved) with the matrix products, so that load from other
    processes lowers all alike: the UNet (eager and compiled), its matrix kernels run in sequence
    with nothing between them (the most fusion could give), and wider UNets of the same design
    (how the fraction grows with the sizes of the matrices).
    """
    device = ctx.device
    batch = 2 * ctx.n(IMAGES, 4)
    repeats = ctx.n(9, 3)
    sizes = ctx.n((512, 1024, 2048), (256, 512))
    channels = optimize.unwrap(ctx.pipe.unet).config.channels
    candidates = {"eager": ctx.pipe}
    wider = {pipe.unet.config.channels: pipe for pipe in (_widened_pipeline(ctx.pipe, f) for f in WIDTH_FACTORS)}
    variant = "eager" if ctx.quick else "compiled"  # the wider UNets run as the best variant does
    if not ctx.quick:  # compiling takes tens of seconds a UNet
        candidates["compiled"] = ctx.compiled(batch)
        wider = {c: optimize.compile(pipe, batch_size=batch) for c, pipe in wider.items()}
    z, t, cond = unet_inputs(ctx.pipe.unet, batch, device=device)
    t = t[:1].reshape(()).expand(batch)  # as the pipeline passes it (a compiled UNet is specialised to that)
    layers = layer_calls(ctx.pipe.unet, z, t, cond)
    unet_flops = count_flops(lambda: optimize.unwrap(ctx.pipe.unet)(z, t, cond))
    flops = dict.fromkeys(candidates, unet_flops)
    flops["layers"] = count_flops(lambda: [call() for call in layers])
    flops.update({c: count_flops(lambda p=p: optimize.unwrap(p.unet)(z, t, cond)) for c, p in wider.items()})
    calls = {name: (lambda p=pipe: p.unet(z, t, cond)) for name, pipe in {**candidates, **wider}.items()}
    calls["layers"] = lambda: [call() for call in layers]
    calls.update(matmul_calls(device, sizes))
    seconds = interleaved_times(calls, repeats, 2, device)
    matmul = matmul_flops_per_second(seconds, sizes)
    peak = max(matmul.values())
    fractions = {name: flops[name] / seconds[name] / peak for name in flops}

    def fraction_row(name, metric, **extra):
        return bench_row(
            "roofline",
            metric,
            fractions[name],
            gflop=flops[name] / 1e9,
            achieved_gflops=flops[name] / seconds[name] / 1e9,
            seconds=seconds[name],
            **extra,
        )

    rows = [
        bench_row(
            "roofline",
            "matmul peak (float32)",
            peak / 1e9,
            unit="GFLOP/s",
            threads=torch.get_num_threads(),
            **{f"matmul_{n}_gflops": flops_per_second / 1e9 for n, flops_per_second in matmul.items()},
        )
    ]
    rows += [
        fraction_row(
            name, f"UNet forward ({name}), channels {channels}, batch {batch}: achieved / peak", channels=list(channels)
        )
        for name in candidates
    ]
    # The 60% target is a CPU's: a GPU runs a batch of 32 8x8 latents far below its peak, whatever
    # the code, because each of the UNet's ~300 kernels is too small to fill it (launch-bound).
    # As for the 0.5 s target, the target is the best variant's (eager is shown for comparison).
    rows.append(best_row("UNet", fractions, candidates, 0.6, judged=torch.device(device).type == "cpu"))
    # The ceiling of fusion: the same matrix kernels with nothing between them. What stays below
    # 1 here is the kernels' own efficiency at the UNet's small shapes (48-96 channels, 8x8 maps).
    rows.append(
        fraction_row(
            "layers",
            f"the UNet's {len(layers)} convolutions and linear layers in sequence, nothing between: achieved / peak",
        )
    )
    # Wider matrices use the kernels better: the fraction is a property of the model's size too.
    rows += [
        fraction_row(
            c,
            f"UNet forward ({variant}), channels {c} (random weights), batch {batch}: achieved / peak",
            channels=list(c),
        )
        for c in wider
    ]
    return rows + mmdit_roofline_rows(ctx)


def time_shares(fn, kinds: dict, repeats: int = 3) -> dict:
    """Shares of fn()'s time by kind of operator (torch.profiler, self CPU time): {kind: share}, "other" last.

    kinds: {kind: (aten operator names)}. Self time: an operator's own work, not that of the ones it calls.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    times = {event.key: event.self_cpu_time_total for event in prof.key_averages() if event.key.startswith("aten::")}
    total = sum(times.values())
    shares = {kind: sum(times.get(name, 0) for name in names) / total for kind, names in kinds.items()}
    return {**shares, "other": 1 - sum(shares.values())}


@torch.no_grad()
def mmdit_roofline_rows(ctx) -> list:
    """Issue 17's target 4: the MM-DiT forward (`ROOFLINE_MMDIT`) at >= 50% of the fp32 matmul peak, same run.

    Batch 2 x 16 images (the guided load); eager and (full mode) compiled, timed interleaved with
    the matrix products; then the profiler's shares of the eager forward's time by kind of operator
    (what still limits it). Quick mode: a smaller model, eager only, and no target.
    """
    device, batch = ctx.device, 2 * ctx.n(IMAGES, 2)
    config = ROOFLINE_MMDIT if not ctx.quick else replace(ROOFLINE_MMDIT, width=64, depth=2, num_heads=1)
    model = perturb_zero_layers(MMDiT(config)).to(device).eval()
    g = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=g).to(device),
        torch.full((batch,), 500.0, device=device),
        torch.randn(batch, 12, config.context_dim, generator=g).to(device),  # 12 text tokens, as the tokenizer's
        torch.randn(batch, config.pooled_dim, generator=g).to(device),
    )
    candidates = {"eager": model}
    if not ctx.quick:  # compiling takes minutes on a shared 2-core machine
        candidates["compiled"] = optimize.compile_module(model, device)
        candidates["compiled"](*inputs)  # compile now, outside the timings
    flops = count_flops(lambda: model(*inputs))
    sizes = ctx.n((512, 1024, 2048), (256, 512))
    calls = {name: (lambda m=m: m(*inputs)) for name, m in candidates.items()}
    seconds = interleaved_times({**calls, **matmul_calls(device, sizes)}, ctx.n(9, 2), 2, device)
    peak = max(matmul_flops_per_second(seconds, sizes).values())
    fractions = {name: flops / seconds[name] / peak for name in candidates}
    shape = f"width {config.width}, {config.depth} blocks, 64 image + 12 text tokens, batch {batch}"
    threads = torch.get_num_threads()
    rows = [
        bench_row(
            "roofline",
            f"MM-DiT forward ({name}), {shape}, {threads} thread(s): achieved / peak",
            fractions[name],
            gflop=flops / 1e9,
            achieved_gflops=flops / seconds[name] / 1e9,
            peak_gflops=peak / 1e9,
            seconds=seconds[name],
            threads=threads,
            batch=batch,
            compiled=compiled_state(m) if name == "compiled" else False,
        )
        for name, m in candidates.items()
    ]
    target = not ctx.quick and torch.device(device).type == "cpu"  # a CPU's target (see roofline_section)
    rows.append(best_row("MM-DiT", fractions, fractions, 0.5, judged=target))
    shares = time_shares(lambda: model(*inputs), OPERATOR_KINDS, repeats=ctx.n(3, 1))
    rows.append(
        bench_row(
            "roofline",
            "MM-DiT forward (eager): share of the time in " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()),
            shares["matrix products"],
            **shares,
        )
    )
    return rows
