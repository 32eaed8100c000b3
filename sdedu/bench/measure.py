"""Timing and counting on a shared machine: medians of interleaved repeats, FLOPs, the matmul peak.

Interleaving (timing every candidate in turn, repeat after repeat) makes a burst of load from
another process hit all of them alike, so that the ratios between them stay fair.
"""

from __future__ import annotations

import statistics
import time

import torch

from sdedu import optimize


def sync(device) -> None:
    """Wait for the work queued on a GPU (CUDA runs asynchronously), so that a timer sees all of it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, repeats: int = 5, warmup: int = 1, device="cpu") -> tuple[float, list[float]]:
    """Median wall-clock seconds of fn() over `repeats` runs after `warmup` runs, and all the times."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def interleaved_times(fns: dict, repeats: int = 5, warmup: int = 1, device="cpu") -> dict:
    """Median seconds of each fn in `fns` ({name: fn}), timing them in turn, repeat after repeat.

    Interleaving makes a burst of load from another process hit every candidate alike, so the
    ratios stay fair on a shared machine.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] += median_time(fn, 1, 0, device)[1]
    return {name: statistics.median(values) for name, values in times.items()}


def count_flops(fn) -> int:
    """FLOPs of the matrix products, convolutions and attention in fn() (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_calls(device="cpu", sizes=(512, 1024, 2048)) -> dict:
    """{"matmul n": a @ b} on square float32 n x n matrices, to time alone or beside other calls."""
    matrices = {n: (torch.randn(n, n, device=device), torch.randn(n, n, device=device)) for n in sizes}
    return {f"matmul {n}": (lambda m=m: m[0] @ m[1]) for n, m in matrices.items()}


def matmul_flops_per_second(seconds: dict, sizes) -> dict:
    """{n: FLOP/s} of the matrix products timed in `seconds` (2 n^3 FLOPs each)."""
    return {n: 2 * n**3 / seconds[f"matmul {n}"] for n in sizes}


@torch.no_grad()
def matmul_peak(device="cpu", sizes=(512, 1024, 2048), repeats: int = 5) -> float:
    """The best FLOP/s of square float32 matrix products measured now."""
    seconds = interleaved_times(matmul_calls(device, sizes), repeats, 1, device)
    return max(matmul_flops_per_second(seconds, sizes).values())


@torch.no_grad()
def layer_calls(unet, *inputs) -> list:
    """The UNet's convolutions and linear layers, each bound to the input it got in unet(*inputs).

    Run one after another, they give the time of the matrix kernels without any of the
    element-wise work between them: what a compiler that fuses all of that away could reach at best.
    """
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, args, out: seen.append((m, args[0])))
        for m in optimize.unwrap(unet).modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    try:
        unet(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return [lambda m=m, x=x: m(x) for m, x in seen]
